"""Every event type and the shape of its `data`: the contract of the streams and of the audit log.

`EventService.record` checks each payload against its Struct (unknown types and unknown fields
included), so a payload cannot drift from this list unnoticed: outside production a mismatch is
an error, in production it is logged. The README's event table is this module, in prose.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Severity = Literal["warning", "error", "critical"]


class Payload(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


# -- projects, tokens ------------------------------------------------------------------------


class ProjectCreated(Payload):
    project_id: str
    name: str
    status: str


class ProjectUpdated(Payload):
    project_id: str
    changes: list[str]
    status: str


class ProjectCompleted(Payload):
    project_id: str
    execution_id: str


class ProjectStopped(Payload):
    executions_paused: int
    tasks_halted: int
    tasks_put_to_a_human: int


class ProjectResumed(Payload):
    tasks_queued: int


class TokenCreated(Payload):
    token_id: str
    name: str
    role: str
    project_ids: list[str] | None
    expires_at: str | None = None  # ISO 8601; None: never (and in events from before expiry existed)


class TokenRevoked(Payload):
    token_id: str
    name: str


# -- tasks and agents --------------------------------------------------------------------------


class TaskCreated(Payload):
    task_id: str
    agent_type: str
    status: str


class TaskProgressUpdated(Payload):
    task_id: str
    agent_type: str
    status: str
    message: str
    progress_percentage: int | None = None


class AgentStatusChanged(Payload):
    agent_type: str
    status: str
    current_task_id: str | None


class AgentOutputDelta(Payload):
    """Live only: never stored."""

    task_id: str
    agent_type: str
    attempt: int
    sequence: int
    text: str


class ErrorNotification(Payload):
    severity: Severity
    message: str
    error_code: str
    task_id: str | None
    agent_type: str | None


class ConflictResolved(Payload):
    task_id: str
    mediation_task_id: str
    resolution: str


# -- the context store -------------------------------------------------------------------------


class ArtifactWritten(Payload):
    """`artifact_created` (by a person or the API) and `artifact_generated` (by an agent)."""

    artifact_id: str
    artifact_type: str
    source_agent: str | None
    title: str
    granularity: str
    version: int
    task_id: str | None


class ArtifactUpdated(Payload):
    artifact_id: str
    version: int
    changed: list[str]
    by: str


class ArtifactDeleted(Payload):
    artifact_id: str
    title: str
    by: str


class ArtifactStale(Payload):
    artifact_id: str
    reason: str
    source_artifact_id: str


class ArtifactsPurged(Payload):
    artifact_ids: list[str]
    older_than_days: int


# -- workflows ---------------------------------------------------------------------------------


class WorkflowStarted(Payload):
    execution_id: str
    workflow_id: str
    steps: int


class WorkflowStepStarted(Payload):
    """`missing_inputs`: what the step `requires` that neither an earlier step nor the project has."""

    execution_id: str
    step: int
    agent_type: str | None
    phase: str
    task_id: str
    task_ids: list[str]
    missing_inputs: list[str] | None = None


class WorkflowStepCompleted(Payload):
    """`status`: completed, failed, or skipped (with the `reason`)."""

    execution_id: str
    step: int
    status: str
    task_id: str | None = None
    task_ids: list[str] | None = None
    reason: str | None = None


class WorkflowPaused(Payload):
    """`reason`: paused (by a person), phase_approval (a gate), or hitl_expired."""

    execution_id: str
    reason: str
    phase: str | None = None
    request_id: str | None = None


class WorkflowResumed(Payload):
    execution_id: str
    phase: str | None = None


class WorkflowExecutionOnly(Payload):
    """`workflow_cancelled`."""

    execution_id: str


class WorkflowCompleted(Payload):
    execution_id: str
    workflow_id: str


class WorkflowFailed(Payload):
    execution_id: str
    step: int
    error: str | None


class WorkflowConditionSet(Payload):
    execution_id: str
    step: int
    condition: str
    value: bool


class WorkflowPhaseRedone(Payload):
    execution_id: str
    phase: str
    steps: list[int]
    feedback: str


# -- HITL --------------------------------------------------------------------------------------


class HitlRequestCreated(Payload):
    request_id: str
    kind: str
    question: str
    urgency: str
    expires_at: str
    task_id: str | None
    assigned_role: str


class HitlRequestResponded(Payload):
    request_id: str
    action: str
    status: str
    responder: str
    comment: str | None


class HitlRequestExpiring(Payload):
    request_id: str
    expires_at: str | None
    expiry_action: str


class HitlRequestExpired(Payload):
    request_id: str
    action: str
    kind: str


# -- chat --------------------------------------------------------------------------------------


class UserChatMessage(Payload):
    text: str
    author: str


class AgentChatMessage(Payload):
    agent_type: str
    task_id: str
    message_type: Literal["info", "question", "response", "thinking"]
    text: str
    requires_response: bool
    in_reply_to: int | None = None
    request_id: str | None = None
    execution_id: str | None = None


PAYLOADS: dict[str, type[Payload]] = {
    "project_created": ProjectCreated,
    "project_updated": ProjectUpdated,
    "project_completed": ProjectCompleted,
    "project_stopped": ProjectStopped,
    "project_resumed": ProjectResumed,
    "token_created": TokenCreated,
    "token_revoked": TokenRevoked,
    "task_created": TaskCreated,
    "task_progress_updated": TaskProgressUpdated,
    "agent_status_changed": AgentStatusChanged,
    "agent_output_delta": AgentOutputDelta,
    "error_notification": ErrorNotification,
    "conflict_resolved": ConflictResolved,
    "artifact_created": ArtifactWritten,
    "artifact_generated": ArtifactWritten,
    "artifact_updated": ArtifactUpdated,
    "artifact_deleted": ArtifactDeleted,
    "artifact_stale": ArtifactStale,
    "artifacts_purged": ArtifactsPurged,
    "workflow_started": WorkflowStarted,
    "workflow_step_started": WorkflowStepStarted,
    "workflow_step_completed": WorkflowStepCompleted,
    "workflow_paused": WorkflowPaused,
    "workflow_resumed": WorkflowResumed,
    "workflow_cancelled": WorkflowExecutionOnly,
    "workflow_completed": WorkflowCompleted,
    "workflow_failed": WorkflowFailed,
    "workflow_condition_set": WorkflowConditionSet,
    "workflow_phase_redone": WorkflowPhaseRedone,
    "hitl_request_created": HitlRequestCreated,
    "hitl_request_responded": HitlRequestResponded,
    "hitl_request_expiring": HitlRequestExpiring,
    "hitl_request_expired": HitlRequestExpired,
    "user_chat_message": UserChatMessage,
    "agent_chat_message": AgentChatMessage,
}


class PayloadError(ValueError):
    """An event's data does not match its catalogued shape (a bug, not bad input)."""


def check_payload(event_type: str, data: dict[str, Any]) -> None:
    payload = PAYLOADS.get(event_type)
    if payload is None:
        msg = f"event type {event_type!r} is not in app/events/catalog.py"
        raise PayloadError(msg)
    try:
        msgspec.convert(data, payload)
    except msgspec.ValidationError as exc:
        msg = f"{event_type}: {exc}"
        raise PayloadError(msg) from None

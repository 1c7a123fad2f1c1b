from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from app.core.schema import InputStruct, Struct, check_json_depth
from app.hitl.models import Urgency
from app.projects.models import OversightLevel

Comment = Annotated[str, Meta(max_length=20_000)]


class HitlResponse(InputStruct):
    action: Literal["approve", "reject", "amend"]
    # Required to reject (it is the feedback the redo gets) and to amend (why).
    comment: Comment | None = None
    # To amend: the corrected content, checked against the artifact type's schema.
    amended_content: dict[str, Any] | str | None = None
    # Free-form answer; `artifact_id` picks which of the request's artifacts an amendment replaces.
    response: Annotated[dict[str, Any], Meta(max_length=50)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_json_depth("amended_content", self.amended_content)
        check_json_depth("response", self.response)


class HistoryEntry(Struct):
    action: str
    actor: str
    comment: str | None
    data: dict[str, Any]
    created_at: datetime.datetime


class HitlRequestView(Struct):
    request_id: UUID
    project_id: UUID
    task_id: UUID | None
    workflow_execution_id: UUID | None
    step_id: str | None
    kind: str
    question: str
    options: list[str]
    artifact_ids: list[UUID]
    urgency: str
    assigned_role: str
    # `expired` as soon as `expires_at` has passed, even before the sweep has run.
    status: str
    user_response: dict[str, Any] | None
    response_comment: str | None
    amended_content: Any
    responder: str | None
    expiry_action: str
    history: list[HistoryEntry]
    created_at: datetime.datetime
    updated_at: datetime.datetime
    expires_at: datetime.datetime | None
    responded_at: datetime.datetime | None


class HitlRequestSummary(Struct):
    request_id: UUID
    project_id: UUID
    task_id: UUID | None
    workflow_execution_id: UUID | None
    kind: str
    question: str
    urgency: str
    assigned_role: str
    status: str
    created_at: datetime.datetime
    expires_at: datetime.datetime | None
    responded_at: datetime.datetime | None


class ContextArtifact(Struct):
    id: UUID
    artifact_type: str
    title: str
    version: int
    content: Any


class ContextTask(Struct):
    id: UUID
    agent_type: str
    status: str
    instructions: str
    error: str | None
    # What the agent said of its answer: summary, confidence, open questions.
    reasoning: dict[str, Any]


class HitlContext(Struct):
    request: HitlRequestView
    artifacts: list[ContextArtifact]
    task: ContextTask | None


class ManualRequest(InputStruct):
    """A person's own request: a question; with `task_id`, a hold on a task that has not started
    (approve releases it, reject cancels it) or a review of a completed one (reject redoes it with
    the comment, amend corrects one of its artifacts)."""

    question: Annotated[str, Meta(min_length=1, max_length=20_000)]
    task_id: UUID | None = None
    artifact_ids: Annotated[list[UUID], Meta(max_length=20)] = msgspec.field(default_factory=list)
    assigned_role: Annotated[str, Meta(pattern=r"^[a-z_]{1,32}$")] = "product_owner"
    urgency: Urgency = Urgency.MEDIUM


class BulkApprove(InputStruct):
    request_ids: Annotated[list[UUID], Meta(min_length=1, max_length=100)]
    comment: Comment | None = None


class BulkResult(Struct):
    request_id: UUID
    ok: bool
    status: str | None
    status_code: int
    detail: str | None = None


class BulkResults(Struct):
    results: list[BulkResult]


class Statistics(Struct):
    project_id: UUID | None
    total: int
    by_status: dict[str, int]
    by_kind: dict[str, int]
    # Approved among the answered (approved, rejected, amended); None before any answer.
    approval_rate: float | None
    median_response_seconds: float | None


class Oversight(Struct):
    project_id: UUID
    oversight_level: OversightLevel


class OversightUpdate(InputStruct, omit_defaults=True):
    """`{"oversight_level": "high"}`, or the upstream clients' `{"level": "high"}` (with both, the first)."""

    oversight_level: OversightLevel | msgspec.UnsetType = msgspec.UNSET
    level: OversightLevel | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.oversight_level, msgspec.UnsetType) and isinstance(self.level, msgspec.UnsetType):
            msg = "give oversight_level (or level): high, medium or low"
            raise ValueError(msg)

    @property
    def chosen(self) -> OversightLevel:
        for value in (self.oversight_level, self.level):
            if not isinstance(value, msgspec.UnsetType):
                return value
        return OversightLevel.MEDIUM  # not reached: one is set (__post_init__)

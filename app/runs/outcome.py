"""One way to finish an attempt: whatever became of it, the same things follow, in one transaction.

The caller has already written the task's new status (completed, failed, timed out, waiting for a
human) under its lease or row lock. `on_attempt_outcome` then does the rest, in this order, always
the same way: a dispute sent to the orchestrator, a question for a person (a HITL request, its
questions in the chat too), the agent's status, an error notice, the workflow step's advance, a chat
answer, the end of a mediation. It never commits: the caller's transaction holds the task's change
and all of these together, so a crash cannot split them.

An attempt after which only the agent's status follows (its answer accepted, no workflow step,
chat or mediation) does not come here: `AgentService.finish_attempt` writes the same, the agent
idle, in the one statement that completes the task.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.models import AgentState
from app.agents.outputs import AgentAnswer
from app.chat.services import ChatService, is_chat_task
from app.config import Settings
from app.hitl.models import HitlKind, HitlRequest, HoldRef, Urgency
from app.runs.mediation import after_mediation, start_mediation
from app.runs.provider import services
from app.tasks.models import AgentTask
from app.workflows.services import ExecutionService


class HumanHold(msgspec.Struct, frozen=True, kw_only=True):
    """The attempt waits for a person: the request to open."""

    kind: HitlKind
    question: str
    urgency: Urgency = Urgency.MEDIUM
    options: tuple[str, ...] = ("approve", "reject", "amend")
    artifact_ids: tuple[UUID, ...] = ()
    actor: str = "system"
    ref: HoldRef | None = None  # what it holds up; None: the task's own step
    # The agent's own questions, also said in the project's chat (each pointing at the request).
    chat_questions: tuple[str, ...] = ()


class ErrorNotice(msgspec.Struct, frozen=True, kw_only=True):
    """An `error_notification` event for the people watching the project."""

    message: str
    code: str
    severity: Literal["warning", "error", "critical"] = "error"


class AttemptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What became of an attempt, beyond the task's own status."""

    agent_state: AgentState
    hold: HumanHold | None = None
    notice: ErrorNotice | None = None
    answer: AgentAnswer | None = None  # the model's answer, when the attempt got one
    dispute: bool = False  # the answer contradicts its inputs: the orchestrator mediates first
    # A state that names the task (working, waiting, error) points the agent at it.
    agent_names_task: bool = True


def is_step_run(task: AgentTask) -> bool:
    """The task is a run of a workflow step: its end advances the execution."""
    return task.workflow_execution_id is not None and task.step_id is not None


async def on_attempt_outcome(
    session: AsyncSession, settings: Settings, task: AgentTask, outcome: AttemptOutcome, *, then_commit: bool = False
) -> tuple[HitlRequest | None, list[UUID]]:
    """Everything that follows an attempt's end (no commit): the request opened, if any, and the tasks
    to queue once the caller has committed.

    `then_commit`: the caller commits next, writing nothing else (no follow-up to queue)."""
    policy = settings.hitl
    follow_ups: list[UUID] = []
    request = None
    if outcome.dispute:
        follow_ups.append((await start_mediation(session, task, round_number=1)).id)
    if outcome.hold is not None:
        request = await _open_hold(session, settings, task, outcome.hold)
    answer = outcome.answer
    # Nothing written after the agent's status (a task of no workflow, chat or mediation, no
    # notice): it may carry the transaction's events (`AgentService.set_status`'s `last`).
    last = (
        then_commit
        and not follow_ups
        and outcome.notice is None
        and not is_step_run(task)
        and not (answer is not None and (is_chat_task(task) or task.mediates is not None))
    )
    await services(session).agents.set_status(
        task.project_id,
        task.agent_type,
        outcome.agent_state,
        task_id=task.id if outcome.agent_names_task and outcome.agent_state != AgentState.IDLE else None,
        last=last,
    )
    if last:
        return request, follow_ups
    if outcome.notice is not None:
        await services(session).events.notify_error(
            project_id=task.project_id,
            severity=outcome.notice.severity,
            message=outcome.notice.message,
            error_code=outcome.notice.code,
            task_id=task.id,
            agent_type=task.agent_type,
        )
    # A workflow step advances in this same transaction (flags feed the workflow's conditions).
    follow_ups += await ExecutionService(session, policy).on_task_finished(task, flags=answer.flags if answer else None)
    if answer is not None and is_chat_task(task):
        follow_ups += await ChatService(session, settings).answered(task, answer)
    if answer is not None and task.mediates is not None:
        follow_ups += await after_mediation(
            session, policy, task, unresolved=bool(answer.conflicts), summary=answer.summary
        )
    return request, follow_ups


async def _open_hold(session: AsyncSession, settings: Settings, task: AgentTask, hold: HumanHold) -> HitlRequest:
    request = await services(session).hitl.open_request(
        policy=settings.hitl,
        project_id=task.project_id,
        task_id=task.id,
        kind=hold.kind,
        question=hold.question,
        options=hold.options,
        urgency=hold.urgency,
        artifact_ids=list(hold.artifact_ids),
        workflow_execution_id=task.workflow_execution_id,
        hold=hold.ref if hold.ref is not None else HoldRef.of_step(task.step_id),
        actor=hold.actor,
    )
    for question in hold.chat_questions:
        await services(session).events.record(
            "agent_chat_message",
            project_id=task.project_id,
            task_id=task.id,
            actor=hold.actor,
            data={
                "agent_type": task.agent_type,
                "task_id": str(task.id),
                "message_type": "question",
                "text": question,
                "requires_response": True,
                "request_id": str(request.id),
            },
        )
    return request

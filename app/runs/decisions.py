"""What a human's answer to a HITL request does.

One answer wins: the request's row is locked and must still be pending (and not past its expiry),
so of two concurrent answers the second finds it answered and gets a 409 with its state. The
answer, its history entry, its event and what it sets going (the execution continuing, a step
redone, an artifact amended) are written in one transaction; the tasks it creates are returned
for the caller to enqueue after the commit.

What an action does depends on what the request holds up:
- a phase gate: approve continues; reject redoes the phase's steps with the comment as feedback;
  amend stores the amended content as a new version of the artifact, then continues;
- a task parked on a question or low confidence: approve accepts its result; reject redoes it
  as a new task carrying the comment; amend stores the amendment, then accepts;
- a task stopped by its budget, a failure or an interruption: approve runs it again, reject fails it;
- a step's condition: approve runs the step, reject skips it.
Past `max_redos` rejections, a rejection escalates instead: a new, critical request for an admin.
"""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.artifacts.schemas import ArtifactUpdate
from app.config import HitlSettings
from app.core.exceptions import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from app.core.security import ROLE_RANK, Principal, Role
from app.hitl.models import HitlHistory, HitlKind, HitlRequest, HitlStatus, HoldKind, HoldRef, Urgency
from app.hitl.queries import effective_status
from app.hitl.state import move as move_request
from app.runs.provider import services
from app.tasks.models import AgentTask, AgentType, TaskStatus
from app.tasks.schemas import TaskCreate
from app.workflows.services import ExecutionService

ANSWERED = {"approve": HitlStatus.APPROVED, "reject": HitlStatus.REJECTED, "amend": HitlStatus.AMENDED}
# Kinds whose task did not produce a result: approving them means "try again".
RETRIED_KINDS = frozenset({HitlKind.BUDGET.value, HitlKind.TASK_FAILURE.value, HitlKind.PRE_CALL.value})


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    action: str
    comment: str | None = None
    amended_content: Any = None
    response: dict[str, Any] | None = None


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def may_answer(request: HitlRequest, principal: Principal) -> bool:
    """The role a request names answers it (a higher role too); an admin answers anything, and only
    an admin answers a request for a role that is not a token role (`architect`)."""
    if principal.role == Role.ADMIN:
        return True
    try:
        assigned = Role(request.assigned_role)
    except ValueError:
        return False
    return ROLE_RANK[principal.role] >= ROLE_RANK[assigned]


def ensure_may_answer(request: HitlRequest, principal: Principal) -> None:
    if not may_answer(request, principal):
        raise ForbiddenError(
            f"HITL request {request.id} is for the {request.assigned_role} role; token '{principal.name}' has the "
            f"{principal.role.value} role (an admin may answer any request).",
            extra={"assigned_role": request.assigned_role, "role": principal.role.value},
        )


class DecisionService:
    def __init__(self, session: AsyncSession, policy: HitlSettings) -> None:
        self.session = session
        self.policy = policy
        self.executions = ExecutionService(session, policy)
        self.tasks = services(session).tasks
        self.events = services(session).events

    async def locked(self, request_id: UUID, principal: Principal | None = None) -> HitlRequest:
        statement = select(HitlRequest).where(HitlRequest.id == request_id).with_for_update()
        request: HitlRequest | None = await self.session.scalar(statement)
        if request is None or (principal is not None and not principal.can_see(request.project_id)):
            raise NotFoundError(f"HITL request {request_id} does not exist.")
        return request

    # -- answering ---------------------------------------------------------------------------

    async def respond(
        self, request_id: UUID, answer: Answer, *, principal: Principal
    ) -> tuple[HitlRequest, list[UUID]]:
        request = await self.locked(request_id, principal)
        ensure_may_answer(request, principal)
        status = effective_status(request)
        if status != HitlStatus.PENDING.value:
            raise ConflictError(
                f"HITL request {request_id} is already {status}.",
                extra={
                    "status": status,
                    "responder": request.responder,
                    "responded_at": request.responded_at.isoformat() if request.responded_at else None,
                },
            )
        self._check(request, answer)
        self._record(request, answer, actor=principal.name, status=ANSWERED[answer.action])
        follow_ups = await self.apply(request, answer, actor=principal.name)
        return request, follow_ups

    @staticmethod
    def _check(request: HitlRequest, answer: Answer) -> None:
        if answer.action not in request.options:
            raise InvalidInputError(
                f"action: {answer.action!r} is not one this request takes; one of {', '.join(request.options)}"
            )
        if answer.action in ("reject", "amend") and not (answer.comment or "").strip():
            raise InvalidInputError(f"comment: required to {answer.action}; say what is wrong")
        if answer.action == "amend" and answer.amended_content is None:
            raise InvalidInputError("amended_content: required to amend; the corrected content of the artifact")

    def _record(self, request: HitlRequest, answer: Answer, *, actor: str, status: HitlStatus) -> None:
        move_request(request, status)
        request.responder = actor
        request.response_comment = answer.comment
        request.user_response = answer.response
        request.amended_content = answer.amended_content
        request.responded_at = now()
        self.session.add(
            HitlHistory(
                request_id=request.id,
                action=answer.action,
                actor=actor,
                comment=answer.comment,
                data={"response": answer.response} if answer.response else {},
            )
        )

    async def announce(self, request: HitlRequest, answer: Answer, *, actor: str) -> None:
        await self.events.record(
            "hitl_request_responded",
            project_id=request.project_id,
            task_id=request.task_id,
            actor=actor,
            data={
                "request_id": str(request.id),
                "action": answer.action,
                "status": request.status,
                "responder": actor,
                "comment": answer.comment,
            },
        )

    async def apply(self, request: HitlRequest, answer: Answer, *, actor: str) -> list[UUID]:
        """Carry the answer out on what the request holds up; the tasks to enqueue after commit."""
        await self.announce(request, answer, actor=actor)
        hold = request.hold
        kind = hold.kind if hold is not None else None
        comment = answer.comment or ""
        if hold is not None and kind == HoldKind.GATE:
            if answer.action == "reject":
                execution = await self.executions.get(request.workflow_execution_id or UUID(int=0))
                phase = hold.ref
                if self.executions.gate_redos(execution, phase) >= self.policy.max_redos:
                    await self.escalate(request, f"The {phase} phase was redone {self.policy.max_redos} times.")
                    return []
                return await self.executions.redo_phase(request, comment, actor=actor)
            if answer.action == "amend":
                await self._amend(request, answer, actor=actor)
            return await self.executions.approve_gate(request)
        if kind in (HoldKind.CONDITION, HoldKind.INTERRUPTED):
            return await self.executions.on_hitl_answered(request, answer.action, actor=actor, comment=comment)
        if request.task_id is None:
            return []  # a question about nothing running: the answer itself is the result
        task = await self.session.scalar(select(AgentTask).where(AgentTask.id == request.task_id).with_for_update())
        if kind == HoldKind.REVIEW and task is not None:
            return await self._reviewed(request, task, answer, actor=actor)
        if task is None or task.status != TaskStatus.WAITING_FOR_HITL.value:
            return []  # cancelled or stopped meanwhile: the answer is kept, there is nothing to continue
        if request.kind in RETRIED_KINDS:
            if answer.action == "reject":
                failed = await self.tasks.fail_parked(task.id, f"stopped by {actor}: {comment}")
                return await self.executions.on_task_finished(failed) if failed is not None else []
            rerun = await self.tasks.rerun_parked(task.id, actor=actor)
            if rerun is None:
                return []
            await self.executions.on_task_finished(rerun)
            return [rerun.id]
        if answer.action == "reject":
            return await self._redo(request, task, comment, actor=actor)
        if answer.action == "amend":
            await self._amend(request, answer, actor=actor)
        accepted = await self.tasks.accept_parked(task.id, actor=actor)
        return await self.executions.on_task_finished(accepted) if accepted is not None else []

    # -- manual requests ---------------------------------------------------------------------

    async def ask(
        self,
        project_id: UUID,
        *,
        question: str,
        task_id: UUID | None,
        artifact_ids: list[UUID],
        assigned_role: str,
        urgency: Urgency,
        actor: str,
    ) -> HitlRequest:
        """A person's own request: a question, a hold on a task that has not started, or a review of a
        finished one (about its artifacts). The caller commits."""
        artifacts = await services(self.session).artifacts.by_ids(project_id, artifact_ids)
        if len(artifacts) != len(set(artifact_ids)):
            raise InvalidInputError("artifact_ids: every artifact must exist in this project")
        options: tuple[str, ...] = ("approve", "reject")
        hold = None
        if task_id is not None:
            task = await self.session.scalar(select(AgentTask).where(AgentTask.id == task_id).with_for_update())
            if task is None or task.project_id != project_id:
                raise InvalidInputError("task_id: no such task in this project")
            if task.status in (TaskStatus.PENDING.value, TaskStatus.QUEUED.value):
                await self.tasks.hold(task.id, actor=actor)
                await self.executions.on_task_finished(task)
            elif task.status == TaskStatus.COMPLETED.value:
                produced = [UUID(value) for value in (task.output or {}).get("artifact_ids", [])]
                artifact_ids = list(dict.fromkeys([*artifact_ids, *produced]))
                options = ("approve", "reject", "amend")
            else:
                raise ConflictError(
                    f"Task {task_id} is {task.status}: a hold is for a task that has not started, a review for a "
                    "completed one (stop the project to halt a running task).",
                    extra={"status": task.status},
                )
            hold = HoldRef(HoldKind.REVIEW, task.status)
        return await services(self.session).hitl.open_request(
            policy=self.policy,
            project_id=project_id,
            kind=HitlKind.MANUAL,
            question=question,
            task_id=task_id,
            options=options,
            artifact_ids=artifact_ids,
            urgency=urgency,
            assigned_role=assigned_role,
            hold=hold,
            actor=actor,
        )

    async def _reviewed(self, request: HitlRequest, task: AgentTask, answer: Answer, *, actor: str) -> list[UUID]:
        """The answer to a person's hold or review of a task."""
        comment = answer.comment or ""
        if task.status == TaskStatus.WAITING_FOR_HITL.value:  # held before it started
            if answer.action == "approve":
                released = await self.tasks.rerun_parked(task.id, actor=actor)
                if released is None:
                    return []
                await self.executions.on_task_finished(released)
                return [released.id]
            cancelled = await self.tasks.cancel_open(task.id, actor=f"{actor}: {comment}", commit=False)
            return await self.executions.on_task_finished(cancelled) if cancelled is not None else []
        if answer.action == "amend":
            await self._amend(request, answer, actor=actor)
        elif answer.action == "reject":  # a finished task: its redo is a task of its own
            redo = await self.tasks.create_task(
                task.project_id,
                TaskCreate(
                    agent_type=AgentType(task.agent_type),
                    instructions=task.instructions,
                    context_ids=[UUID(value) for value in task.context_ids],
                ),
                default_timeout=task.timeout_seconds,
                actor=actor,
                feedback=comment,
                redo_of=task.id,
                brief=task.brief,
            )
            return [redo.id]
        return []

    async def _amend(self, request: HitlRequest, answer: Answer, *, actor: str) -> None:
        """The amended content becomes a new version of the artifact the request is about, by the human."""
        about = [UUID(value) for value in request.artifact_ids]
        named = (answer.response or {}).get("artifact_id")
        if named is not None:
            try:
                target = UUID(str(named))
            except ValueError:
                raise InvalidInputError("response.artifact_id: not a UUID") from None
            if target not in about:
                raise InvalidInputError("response.artifact_id: not one of the artifacts this request is about")
        elif about:
            target = about[0]
        else:
            raise InvalidInputError("action: 'amend' needs an artifact, and this request is about none")
        content = answer.amended_content
        if not isinstance(content, dict | str):
            raise InvalidInputError("amended_content: a JSON object (or text for free-form artifacts)")
        await services(self.session).artifacts.update_artifact(
            target,
            ArtifactUpdate(content=content, change_note=f"amended: {answer.comment}"),
            actor=f"human:{actor}",
        )

    async def _redo(self, request: HitlRequest, task: AgentTask, comment: str, *, actor: str) -> list[UUID]:
        """A rejected result is redone by a new task with the comment as feedback (or escalated)."""
        redos, earlier = 0, task.redo_of
        while earlier is not None and redos <= self.policy.max_redos:
            redos += 1
            earlier = await self.session.scalar(select(AgentTask.redo_of).where(AgentTask.id == earlier))
        if redos >= self.policy.max_redos:
            await self.escalate(request, f"This result was redone {redos} times already.")
            return []
        new = await self.tasks.create_task(
            task.project_id,
            TaskCreate(
                agent_type=AgentType(task.agent_type),
                instructions=task.instructions,
                context_ids=[UUID(value) for value in task.context_ids],
            ),
            default_timeout=task.timeout_seconds,
            actor=actor,
            workflow_execution_id=task.workflow_execution_id,
            step_id=task.step_id,
            at_most_once=task.at_most_once,
            feedback=comment,
            redo_of=task.id,
            brief=task.brief,
        )
        await self.executions.replace_run(task, new)
        await self.tasks.cancel_open(task.id, actor=f"{actor} (rejected; redone as task {new.id})", commit=False)
        return [new.id]

    async def escalate(self, request: HitlRequest, reason: str) -> HitlRequest:
        """A new, critical request for an admin, in place of `request` (which keeps its own status)."""
        new = await services(self.session).hitl.open_request(
            policy=self.policy,
            project_id=request.project_id,
            kind=HitlKind(request.kind),
            question=f"Escalated: {reason}\n\n{request.question}",
            task_id=request.task_id,
            options=request.options,
            artifact_ids=[UUID(value) for value in request.artifact_ids],
            urgency=Urgency.CRITICAL,
            assigned_role="admin",
            workflow_execution_id=request.workflow_execution_id,
            hold=request.hold,
            actor="escalation",
        )
        self.session.add(
            HitlHistory(request_id=request.id, action="escalated", actor="escalation", data={"to": str(new.id)})
        )
        await self.executions.repoint(request, new)
        return new

    async def expire(self, request_id: UUID) -> list[UUID]:
        """The sweep: a pending request past its expiry is expired, and its expiry action carried out."""
        request = await self.locked(request_id)
        if request.status != HitlStatus.PENDING.value or effective_status(request) != HitlStatus.EXPIRED.value:
            return []
        action = request.expiry_action
        if action in ("approve", "reject") and action not in request.options:
            action = "pause"  # e.g. a request that cannot be approved blindly
        move_request(request, HitlStatus.EXPIRED)
        self.session.add(HitlHistory(request_id=request.id, action="expired", actor="expiry", data={"action": action}))
        await self.events.record(
            "hitl_request_expired",
            project_id=request.project_id,
            task_id=request.task_id,
            actor="expiry",
            data={"request_id": str(request.id), "action": action, "kind": request.kind},
        )
        if action in ("approve", "reject"):
            answer = Answer(action=action, comment="No answer came before the request expired.")
            return await self.apply(request, answer, actor="expiry")
        if action == "escalate":
            await self.escalate(request, "Nobody answered before it expired.")
            return []
        await self.executions.pause_on_expiry(request)
        return []

    async def warn(self, request_id: UUID) -> bool:
        """The `hitl_request_expiring` event, once per request."""
        request = await self.locked(request_id)
        if request.status != HitlStatus.PENDING.value or request.warned_at is not None:
            return False
        request.warned_at = now()
        await self.events.record(
            "hitl_request_expiring",
            project_id=request.project_id,
            task_id=request.task_id,
            data={
                "request_id": str(request.id),
                "expires_at": request.expires_at.isoformat() if request.expires_at else None,
                "expiry_action": request.expiry_action,
            },
        )
        return True

"""Halting work: a project's emergency stop and resume, and at-most-once tasks cut off mid-attempt.

An emergency stop pauses the project (no task of it is claimed or requeued while it is paused),
pauses its open executions, and takes every running attempt away: the worker's lease watcher
sees it gone and cancels the model call. The task goes back to `pending`, except an at-most-once
task, which may have acted already: it is put to a human, as after a crash. Resume undoes the
pause and queues the project's waiting tasks again.
"""

from __future__ import annotations

from uuid import UUID

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.models import AgentState
from app.config import HitlSettings, Settings
from app.core.exceptions import ConflictError, NotFoundError
from app.hitl.models import HitlKind, HoldKind, HoldRef, Urgency
from app.projects.models import Project, ProjectStatus
from app.runs.outcome import AttemptOutcome, ErrorNotice, HumanHold, on_attempt_outcome
from app.runs.provider import services
from app.tasks.models import AgentTask, TaskStatus
from app.workflows.models import ExecutionStatus, WorkflowExecution
from app.workflows.services import ExecutionService

logger = structlog.get_logger(__name__)


async def park_interrupted_task(
    session: AsyncSession, settings: Settings, task_id: UUID, *, grace_seconds: float | None, why: str
) -> bool:
    """Hold an at-most-once task cut off mid-attempt for a human, with a `task_failure` request (no commit)."""
    task = await services(session).tasks.park_interrupted(task_id, grace_seconds)
    if task is None:
        return False
    question = (
        f"The {task.agent_type} task {task.id} was interrupted mid-attempt ({why}). It acts outside the "
        "server, so part of it may already have happened. Approve to run it again, reject to fail it."
    )
    request, _ = await on_attempt_outcome(
        session,
        settings,
        task,
        AttemptOutcome(
            agent_state=AgentState.WAITING_FOR_HITL,
            hold=HumanHold(
                kind=HitlKind.TASK_FAILURE,
                question=question,
                options=("approve", "reject"),
                urgency=Urgency.HIGH,
                ref=HoldRef(HoldKind.INTERRUPTED, task.step_id or ""),
            ),
            notice=ErrorNotice(
                message=f"interrupted mid-attempt ({why}); it acts outside the server: a person decides",
                code="interrupted",
                severity="critical",
            ),
        ),
    )
    logger.warning(
        "task_interrupted_parked", task_id=str(task.id), request_id=str(request.id if request else ""), why=why
    )
    return True


async def park_interrupted(session: AsyncSession, settings: Settings, *, grace_seconds: float) -> None:
    """The sweep: at-most-once tasks whose worker died are not requeued; each is put to a human."""
    for task_id in await services(session).tasks.interrupted(grace_seconds):
        if await park_interrupted_task(
            session, settings, task_id, grace_seconds=grace_seconds, why="its worker stopped"
        ):
            await session.commit()
        else:
            await session.rollback()  # another sweeper took it, or it finished


async def _project(session: AsyncSession, project_id: UUID) -> Project:
    project = await session.scalar(select(Project).where(Project.id == project_id).with_for_update())
    if project is None:
        raise NotFoundError(f"Project {project_id} does not exist.")
    return project


async def stop_project(session: AsyncSession, settings: Settings, project_id: UUID, *, actor: str) -> dict[str, int]:
    """Emergency stop, in one transaction: what it halted, by kind."""
    project = await _project(session, project_id)
    if project.status != ProjectStatus.ACTIVE.value:
        raise ConflictError(f"Project {project_id} is {project.status}; only an active project can be stopped.")
    project.status = ProjectStatus.PAUSED.value
    executions = ExecutionService(session, settings.hitl)
    paused = 0
    open_executions = select(WorkflowExecution.id).where(
        WorkflowExecution.project_id == project_id,
        WorkflowExecution.status.in_([ExecutionStatus.RUNNING.value, ExecutionStatus.WAITING_FOR_HITL.value]),
    )
    for execution_id in list(await session.scalars(open_executions)):
        await executions.pause(execution_id, actor=actor, stop=True)
        paused += 1
    tasks = services(session).tasks
    halted = parked = 0
    working = select(AgentTask.id, AgentTask.at_most_once).where(
        AgentTask.project_id == project_id, AgentTask.status == TaskStatus.WORKING.value
    )
    for task_id, at_most_once in list(await session.execute(working)):
        if at_most_once:
            parked += await park_interrupted_task(session, settings, task_id, grace_seconds=None, why="emergency stop")
        elif await tasks.halt(task_id, actor=actor) is not None:
            halted += 1
    summary = {"executions_paused": paused, "tasks_halted": halted, "tasks_put_to_a_human": parked}
    await services(session).events.record("project_stopped", project_id=project_id, actor=actor, data=summary)
    return summary


async def resume_project(session: AsyncSession, policy: HitlSettings, project_id: UUID, *, actor: str) -> list[UUID]:
    """Undo an emergency stop (no commit): executions resume; returns the tasks to queue after commit."""
    project = await _project(session, project_id)
    if project.status != ProjectStatus.PAUSED.value:
        raise ConflictError(f"Project {project_id} is {project.status}; only a stopped (paused) project resumes.")
    project.status = ProjectStatus.ACTIVE.value
    executions = ExecutionService(session, policy)
    follow_ups: list[UUID] = []
    paused = select(WorkflowExecution.id).where(
        WorkflowExecution.project_id == project_id, WorkflowExecution.status == ExecutionStatus.PAUSED.value
    )
    for execution_id in list(await session.scalars(paused)):
        # Only what the stop paused; an execution paused by hand stays paused.
        follow_ups += (await executions.resume(execution_id, actor=actor, stopped_only=True))[1]
    # Jobs sent while it was stopped were refused by the claim: queue every waiting task afresh.
    await session.execute(
        update(AgentTask)
        .where(AgentTask.project_id == project_id, AgentTask.status == TaskStatus.QUEUED.value)
        .values(status=TaskStatus.PENDING.value, job_id=None, queued_at=None)
    )
    waiting = select(AgentTask.id).where(
        AgentTask.project_id == project_id, AgentTask.status == TaskStatus.PENDING.value
    )
    follow_ups += [task_id for task_id in await session.scalars(waiting) if task_id not in follow_ups]
    await services(session).events.record(
        "project_resumed", project_id=project_id, actor=actor, data={"tasks_queued": len(follow_ups)}
    )
    return follow_ups

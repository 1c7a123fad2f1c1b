"""Agent tasks: creation and every state transition.

Transitions are compare-and-set UPDATEs (`... WHERE status = … AND lease_token = …`), so that
concurrent workers, the sweep and redelivered jobs can never both win: the database decides.
Each transition writes its event in the same transaction and commits it.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any
from uuid import UUID, uuid4

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import ColumnElement, and_, bindparam, or_, select, update

from app.artifacts.models import Artifact
from app.core.exceptions import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
    is_unavailable_error,
)
from app.events.services import EventService
from app.projects.models import Project, ProjectStatus
from app.tasks.models import AgentTask, TaskStatus
from app.tasks.schemas import TaskCreate
from app.tasks.state import TASK_MOVES

Enqueue = Callable[[UUID, str], Awaitable[None]]
LEASE_EXPIRED = "worker lost; requeued"


# Built once: the statement and its cache key are reused by every status read.
_STATUS_ROWS = (
    select(AgentTask.id, AgentTask.agent_type, AgentTask.status, AgentTask.created_at, AgentTask.updated_at)
    .select_from(Project)
    .outerjoin(AgentTask, AgentTask.project_id == Project.id)
    .where(Project.id == bindparam("project_id"))
    .order_by(AgentTask.id)
)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Lease:
    """A worker's claim on a running task; only its holder may report progress or finish it."""

    def __init__(self, task: AgentTask, token: str) -> None:
        self.task = task
        self.token = token


class TaskService(SQLAlchemyAsyncRepositoryService[AgentTask]):
    class Repo(SQLAlchemyAsyncRepository[AgentTask]):
        model_type = AgentTask

    repository_type = Repo

    @property
    def events(self) -> EventService:
        return EventService(session=self.repository.session)

    async def get_task(self, task_id: UUID) -> AgentTask:
        task = await self.get_one_or_none(AgentTask.id == task_id)
        if task is None:
            raise NotFoundError(f"Task {task_id} does not exist.")
        return task

    async def tasks_of_project(self, project_id: UUID) -> Sequence[AgentTask]:
        if await self.repository.session.get(Project, project_id) is None:
            raise NotFoundError(f"Project {project_id} does not exist.")
        statement = select(AgentTask).where(AgentTask.project_id == project_id).order_by(AgentTask.id)
        return list(await self.repository.session.scalars(statement))

    async def status_rows_of_project(
        self, project_id: UUID
    ) -> list[tuple[UUID, str, str, datetime.datetime, datetime.datetime]]:
        """(id, agent_type, status, created_at, updated_at) of the project's tasks in id order, in one
        round trip: the project left-joined to its tasks (no row: no such project). Columns, not
        entities: the status read is the hottest endpoint and needs no ORM objects."""
        connection = await self.repository.session.connection()
        rows = (await connection.execute(_STATUS_ROWS, {"project_id": project_id})).all()
        if not rows:
            raise NotFoundError(f"Project {project_id} does not exist.")
        return [row._tuple() for row in rows if row[0] is not None]

    # -- creation ---------------------------------------------------------------------------

    async def submit(
        self,
        project_id: UUID,
        data: TaskCreate,
        enqueue: Enqueue,
        *,
        default_timeout: int,
        actor: str | None = None,
    ) -> tuple[UUID, str]:
        """Store the task and mark it queued in one transaction, commit, then queue its job: the
        answer of the create endpoint.

        The commit comes first so that a worker never receives a job for a row it cannot see. One
        transaction, not two: each commit that writes events holds the event-order lock until it
        ends (`app.events.outbox`), so a submission takes it once. If the broker refuses, the task
        goes back to pending for the sweep to retry, as in `dispatch`.
        """
        task = await self.create_task(project_id, data, default_timeout=default_timeout, actor=actor)
        task_id = task.id
        job_id = uuid4().hex
        await self._transition(
            task_id,
            [TaskStatus.PENDING],
            self._queued_values(job_id),
            message="queued",
            progress=0,
            commit=False,
        )
        await self.repository.session.commit()
        try:
            await self._enqueue_or_fall_back(task_id, job_id, enqueue)
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise
            raise ServiceUnavailableError(
                f"The task queue is unavailable; task {task_id} is stored as pending and will be queued "
                "when the queue is back.",
                extra={"task_id": str(task_id), "component": "broker"},
            ) from exc
        return task_id, job_id

    @staticmethod
    def _queued_values(job_id: str) -> dict[str, Any]:
        return {
            "status": TaskStatus.QUEUED.value,
            "job_id": job_id,
            "queued_at": utcnow(),
            "lease_token": None,
            "lease_expires_at": None,
        }

    async def _enqueue_or_fall_back(self, task_id: UUID, job_id: str, enqueue: Enqueue) -> None:
        """Send the job of a task committed as queued; if the broker refuses, back to pending (and raise)."""
        try:
            await enqueue(task_id, job_id)
        except Exception:
            await self._transition(
                task_id,
                [TaskStatus.QUEUED],
                {"status": TaskStatus.PENDING.value, "job_id": None, "queued_at": None},
                where=AgentTask.job_id == job_id,
                message="task queue unavailable; will retry",
            )
            raise

    async def dispatch(
        self,
        task_id: UUID,
        source: Collection[TaskStatus],
        enqueue: Enqueue,
        message: str = "queued",
        *,
        where: ColumnElement[bool] | None = None,
    ) -> str | None:
        """Mark the task queued (if in `source` and `where` holds) under a new job id, commit, then enqueue it.

        Queued is committed before the job exists, so a worker can never find the task in an
        earlier state than its job. If the broker refuses, the task goes back to pending for the
        sweep to retry. None: the condition no longer held (someone else moved the task).
        """
        job_id = uuid4().hex
        queued = await self._transition(
            task_id, source, self._queued_values(job_id), where=where, message=message, progress=0
        )
        if queued is None:
            return None
        await self._enqueue_or_fall_back(task_id, job_id, enqueue)
        return job_id

    async def create_task(
        self,
        project_id: UUID,
        data: TaskCreate,
        *,
        default_timeout: int = 300,
        actor: str | None = None,
        workflow_execution_id: UUID | None = None,
        step_id: str | None = None,
        at_most_once: bool = False,
        feedback: str | None = None,
        redo_of: UUID | None = None,
        mediates: UUID | None = None,
        brief: dict[str, Any] | None = None,
    ) -> AgentTask:
        """Store a task `pending` with its `task_created` event (no commit, not yet queued)."""
        session = self.repository.session
        if await session.get(Project, project_id) is None:
            raise NotFoundError(f"Project {project_id} does not exist.")
        await self._check_context_ids(project_id, data.context_ids)
        task = await self.create(
            {
                "project_id": project_id,
                "agent_type": data.agent_type.value,
                "instructions": data.instructions,
                "context_ids": [str(artifact_id) for artifact_id in data.context_ids],
                "status": TaskStatus.PENDING.value,
                "timeout_seconds": data.timeout_seconds or default_timeout,
                "workflow_execution_id": workflow_execution_id,
                "step_id": step_id,
                "at_most_once": at_most_once,
                "feedback": feedback,
                "redo_of": redo_of,
                "mediates": mediates,
                "brief": brief,
            }
        )
        await self.events.record(
            "task_created",
            project_id=project_id,
            task_id=task.id,
            actor=actor,
            data={"task_id": str(task.id), "agent_type": task.agent_type, "status": task.status},
        )
        return task

    async def _check_context_ids(self, project_id: UUID, context_ids: list[UUID]) -> None:
        if not context_ids:
            return
        statement = select(Artifact.id).where(
            Artifact.project_id == project_id, Artifact.id.in_(context_ids), Artifact.deleted_at.is_(None)
        )
        found = set(await self.repository.session.scalars(statement))
        missing = [str(artifact_id) for artifact_id in context_ids if artifact_id not in found]
        if missing:
            raise InvalidInputError(
                "context_ids names artifacts that are not in this project.",
                extra=[{"key": "context_ids", "message": f"unknown artifact ids: {', '.join(missing)}"}],
            )

    # -- transitions ------------------------------------------------------------------------

    async def _transition(
        self,
        task_id: UUID,
        source: Collection[TaskStatus],
        values: dict[str, Any],
        *,
        where: ColumnElement[bool] | None = None,
        message: str,
        progress: int | None = None,
        event_type: str = "task_progress_updated",
        commit: bool = True,
    ) -> AgentTask | None:
        """Apply `values` if the task is still in one of the `source` statuses (and `where` holds); record
        the event and commit. None: lost the race. A new status must be a move TASK_MOVES allows from
        every source status.

        With `commit=False` the caller adds more to the same transaction and commits (or rolls back) itself.
        """
        if "status" in values:
            for status in source:
                TASK_MOVES.check(status, TaskStatus(values["status"]))
        condition = AgentTask.status.in_([status.value for status in source])
        statement = (
            update(AgentTask)
            .where(AgentTask.id == task_id, condition, *(() if where is None else (where,)))
            .values(updated_at=utcnow(), **values)
            .returning(AgentTask)
            # the session may hold this task already: take the row as the UPDATE left it
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        session = self.repository.session
        task: AgentTask | None = (await session.execute(statement)).scalar_one_or_none()
        if task is None:
            if commit:
                await session.commit()  # end the transaction (and SQLite's write lock); nothing changed
            return None
        data: dict[str, Any] = {
            "task_id": str(task.id),
            "agent_type": task.agent_type,
            "status": task.status,
            "message": message,
        }
        if progress is not None:
            data["progress_percentage"] = progress
        await self.events.record(event_type, project_id=task.project_id, task_id=task.id, data=data)
        if commit:
            await session.commit()
        return task

    async def claim(self, task_id: UUID, lease_seconds: float) -> Lease | None:
        """Start an attempt: pending/queued, or working with a lease that ran out, becomes ours."""
        now = utcnow()
        token = str(uuid4())
        claimable = and_(
            or_(
                AgentTask.status.in_([TaskStatus.PENDING.value, TaskStatus.QUEUED.value]),
                and_(_lost(now), AgentTask.at_most_once.is_(False)),
            ),
            _not_stopped(),
        )
        task = await self._transition(
            task_id,
            [TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.WORKING],
            {
                "status": TaskStatus.WORKING.value,
                "lease_token": token,
                "lease_expires_at": now + datetime.timedelta(seconds=lease_seconds),
                "heartbeat_at": now,
                "started_at": now,
                "attempts": AgentTask.attempts + 1,
            },
            where=claimable,
            message="working",
            progress=0,
        )
        return Lease(task, token) if task is not None else None

    @staticmethod
    def _held(lease: Lease) -> ColumnElement[bool]:
        """With source `working`: the attempt is still this lease's."""
        return AgentTask.lease_token == lease.token

    async def renew_lease(self, lease: Lease, lease_seconds: float) -> bool:
        """Heartbeat. False: the lease is gone (the sweep gave the task away, or it was cancelled)."""
        now = utcnow()
        statement = (
            update(AgentTask)
            .where(AgentTask.id == lease.task.id, self._held(lease))
            .values(heartbeat_at=now, lease_expires_at=now + datetime.timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
        result = await self.repository.session.execute(statement)
        await self.repository.session.commit()
        return bool(result.rowcount)

    async def lock_held(self, lease: Lease) -> bool:
        """Lock the task's row if the lease still holds (no commit): the finish that follows cannot lose it."""
        statement = select(AgentTask.id).where(AgentTask.id == lease.task.id, self._held(lease)).with_for_update()
        return await self.repository.session.scalar(statement) is not None

    async def holds(self, lease: Lease) -> bool:
        """Is the task still running under this lease? (Cancelled, timed out or reassigned: no.)"""
        statement = select(AgentTask.id).where(AgentTask.id == lease.task.id, self._held(lease))
        held = await self.repository.session.scalar(statement) is not None
        await self.repository.session.commit()
        return held

    async def report_progress(self, lease: Lease, lease_seconds: float, progress: int | None, message: str) -> bool:
        now = utcnow()
        task = await self._transition(
            lease.task.id,
            [TaskStatus.WORKING],
            {"heartbeat_at": now, "lease_expires_at": now + datetime.timedelta(seconds=lease_seconds)},
            where=self._held(lease),
            message=message,
            progress=progress,
        )
        return task is not None

    async def complete(
        self,
        lease: Lease,
        output: dict[str, Any],
        *,
        status: TaskStatus = TaskStatus.COMPLETED,
        error: str | None = None,
        commit: bool = True,
    ) -> AgentTask | None:
        """Finish the attempt. Accepted only from the current lease holder, so a task completes once.

        `status` is `waiting_for_hitl` when the agent asked a question: the work is stored, a person answers.
        """
        done = status == TaskStatus.COMPLETED
        return await self._transition(
            lease.task.id,
            [TaskStatus.WORKING],
            {
                "status": status.value,
                "output": output,
                "error": error,
                "lease_token": None,
                "lease_expires_at": None,
                "finished_at": utcnow() if done else None,
            },
            where=self._held(lease),
            message="completed" if done else "waiting for a human answer",
            progress=100 if done else None,
            commit=commit,
        )

    async def hand_back(self, lease: Lease, enqueue: Enqueue) -> str | None:
        """A stopping worker gives up its attempt: queued again under a new job, at once, not after
        its lease runs out. None: the lease no longer held (the task finished or moved on)."""
        return await self.dispatch(
            lease.task.id, [TaskStatus.WORKING], enqueue, "worker stopping; handed back", where=self._held(lease)
        )

    async def requeue_unstarted(self, task_id: UUID, enqueue: Enqueue) -> str | None:
        """A stopping worker got a job it will not start: the task is queued again for another worker."""
        return await self.dispatch(
            task_id, [TaskStatus.PENDING, TaskStatus.QUEUED], enqueue, "worker stopping; requeued"
        )

    async def cancel(self, task_id: UUID, *, actor: str | None = None) -> AgentTask:
        """Stop a task that has not finished: it never starts, or its running attempt is abandoned."""
        await self.get_task(task_id)  # 404 for an unknown task
        cancelled = await self.cancel_open(task_id, actor=actor)
        if cancelled is None:
            current = await self.get_task(task_id)
            raise ConflictError(
                f"Task {task_id} is already {current.status}; only unfinished tasks can be cancelled.",
                extra={"status": current.status},
            )
        return cancelled

    async def cancel_open(self, task_id: UUID, *, actor: str | None = None, commit: bool = True) -> AgentTask | None:
        """Cancel the task if it has not finished. None: it had."""
        open_statuses = [TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.WORKING, TaskStatus.WAITING_FOR_HITL]
        return await self._transition(
            task_id,
            open_statuses,
            {
                "status": TaskStatus.CANCELLED.value,
                "lease_token": None,
                "lease_expires_at": None,
                "finished_at": utcnow(),
            },
            message=f"cancelled by {actor or 'the system'}",
            commit=commit,
        )

    async def cancel_if_open(self, task_id: UUID, *, actor: str | None = None) -> bool:
        """Cancel the task if it has not finished; False if it had."""
        try:
            await self.cancel(task_id, actor=actor)
        except ConflictError:
            return False
        return True

    async def fail(self, lease: Lease, error: str, *, commit: bool = True) -> AgentTask | None:
        return await self._transition(
            lease.task.id,
            [TaskStatus.WORKING],
            {
                "status": TaskStatus.FAILED.value,
                "error": error,
                "lease_token": None,
                "lease_expires_at": None,
                "finished_at": utcnow(),
            },
            where=self._held(lease),
            message=f"failed: {error}",
            commit=commit,
        )

    async def fail_timed_out(self, now: datetime.datetime | None = None) -> list[AgentTask]:
        """Fail every attempt that has been working longer than its task's timeout.

        Its worker may be alive (and renewing the lease) but stuck; the failure takes the lease
        away, which is how that worker learns to stop.
        """
        now = now or utcnow()
        statement = select(AgentTask.id, AgentTask.started_at, AgentTask.timeout_seconds).where(
            AgentTask.status == TaskStatus.WORKING.value
        )
        rows = list(await self.repository.session.execute(statement))
        await self.repository.session.commit()
        failed: list[AgentTask] = []
        for task_id, started_at, timeout in rows:
            if started_at is None or now - started_at <= datetime.timedelta(seconds=timeout):
                continue
            task = await self._transition(
                task_id,
                [TaskStatus.WORKING],
                {
                    "status": TaskStatus.FAILED.value,
                    "error": f"timed out: no result within {timeout} s",
                    "lease_token": None,
                    "lease_expires_at": None,
                    "finished_at": now,
                },
                where=AgentTask.started_at == started_at,
                message=f"failed: timed out after {timeout} s",
            )
            if task is not None:
                failed.append(task)
        return failed

    # -- sweep ------------------------------------------------------------------------------

    async def sweep(self, enqueue: Enqueue, *, pending_after: float, queued_after: float, limit: int = 100) -> int:
        requeued = await self.sweep_by_reason(
            enqueue, pending_after=pending_after, queued_after=queued_after, limit=limit
        )
        return sum(requeued.values())

    async def sweep_by_reason(
        self, enqueue: Enqueue, *, pending_after: float, queued_after: float, limit: int = 100
    ) -> dict[str, int]:
        """Put back into the queue every task that fell out of it. Safe in several processes at once.

        - working, lease expired: its worker died (an at-most-once task is parked instead, see
          `park_interrupted`);
        - pending for `pending_after` s: the broker was down when it was submitted;
        - queued for `queued_after` s: its message was lost (a flushed Redis); a duplicate
          message is harmless, since only one claim can win.
        """
        now = utcnow()
        conditions: dict[str, tuple[TaskStatus, ColumnElement[bool]]] = {
            LEASE_EXPIRED: (TaskStatus.WORKING, and_(_lost(now), AgentTask.at_most_once.is_(False))),
            "queued": (TaskStatus.PENDING, AgentTask.created_at < now - datetime.timedelta(seconds=pending_after)),
            "requeued: no worker took it": (
                TaskStatus.QUEUED,
                AgentTask.queued_at < now - datetime.timedelta(seconds=queued_after),
            ),
        }
        dispatched = dict.fromkeys(conditions, 0)
        for message, (status, condition) in conditions.items():
            statement = (
                select(AgentTask.id)
                .where(AgentTask.status == status.value, condition, _not_stopped())
                .order_by(AgentTask.id)
                .limit(limit)
            )
            task_ids = list(await self.repository.session.scalars(statement))
            await self.repository.session.commit()
            for task_id in task_ids:
                if await self.dispatch(task_id, [status], enqueue, message, where=condition) is not None:
                    dispatched[message] += 1
        return dispatched

    # -- at-most-once tasks whose worker died ---------------------------------------------------

    async def interrupted(self, grace_seconds: float, limit: int = 100) -> list[UUID]:
        """At-most-once tasks whose worker died mid-attempt: they may have partly done their work.

        Their lease must have run out `grace_seconds` ago: a live worker that was only slow to
        heartbeat renews its lease meanwhile and keeps the task, instead of troubling a human.
        """
        lapsed = utcnow() - datetime.timedelta(seconds=grace_seconds)
        statement = (
            select(AgentTask.id)
            .where(_lost(lapsed), AgentTask.at_most_once.is_(True))
            .order_by(AgentTask.id)
            .limit(limit)
        )
        task_ids = list(await self.repository.session.scalars(statement))
        await self.repository.session.commit()
        return task_ids

    async def park_interrupted(self, task_id: UUID, grace_seconds: float | None) -> AgentTask | None:
        """Hold an interrupted at-most-once task for a human (no commit). None: it moved on meanwhile.

        `grace_seconds`: its worker died (the lease lapsed that long ago); None: it is being stopped.
        """
        attempt: ColumnElement[bool] = AgentTask.at_most_once.is_(True)
        if grace_seconds is not None:
            attempt = and_(attempt, _lost(utcnow() - datetime.timedelta(seconds=grace_seconds)))
        return await self._transition(
            task_id,
            [TaskStatus.WORKING],
            {"status": TaskStatus.WAITING_FOR_HITL.value, "lease_token": None, "lease_expires_at": None},
            where=attempt,
            message="interrupted mid-attempt; it acts outside the server, so a human decides whether to rerun it",
            commit=False,
        )

    async def rerun_parked(self, task_id: UUID, *, actor: str) -> AgentTask | None:
        """A human allowed another attempt of a parked task: pending again (no commit; dispatch after)."""
        return await self._transition(
            task_id,
            [TaskStatus.WAITING_FOR_HITL],
            {"status": TaskStatus.PENDING.value, "job_id": None, "queued_at": None, "error": None},
            message=f"another attempt allowed by {actor}",
            commit=False,
        )

    async def halt(self, task_id: UUID, *, actor: str) -> AgentTask | None:
        """Emergency stop: a working attempt is abandoned (its worker sees the lease gone and cancels
        the model call) and the task is pending again, to run once the project resumes (no commit)."""
        return await self._transition(
            task_id,
            [TaskStatus.WORKING],
            {
                "status": TaskStatus.PENDING.value,
                "lease_token": None,
                "lease_expires_at": None,
                "job_id": None,
                "queued_at": None,
            },
            where=AgentTask.at_most_once.is_(False),
            message=f"halted by {actor}: emergency stop",
            commit=False,
        )

    async def hold(self, task_id: UUID, *, actor: str) -> AgentTask | None:
        """A person holds a task that has not started, to review it first (no commit)."""
        return await self._transition(
            task_id,
            [TaskStatus.PENDING, TaskStatus.QUEUED],
            {"status": TaskStatus.WAITING_FOR_HITL.value, "job_id": None, "queued_at": None},
            message=f"held for review by {actor}",
            commit=False,
        )

    async def accept_parked(self, task_id: UUID, *, actor: str) -> AgentTask | None:
        """A human accepted the result a parked task is waiting with: it is complete (no commit)."""
        return await self._transition(
            task_id,
            [TaskStatus.WAITING_FOR_HITL],
            {"status": TaskStatus.COMPLETED.value, "finished_at": utcnow()},
            message=f"completed: accepted by {actor}",
            progress=100,
            commit=False,
        )

    async def fail_parked(self, task_id: UUID, error: str) -> AgentTask | None:
        """A human declined another attempt of a parked task: it fails (no commit)."""
        return await self._transition(
            task_id,
            [TaskStatus.WAITING_FOR_HITL],
            {"status": TaskStatus.FAILED.value, "error": error, "finished_at": utcnow()},
            message=f"failed: {error}",
            commit=False,
        )


def _not_stopped() -> ColumnElement[bool]:
    """Tasks of a project under an emergency stop (paused) are neither claimed nor requeued."""
    paused = select(Project.id).where(Project.status == ProjectStatus.PAUSED.value)
    return AgentTask.project_id.not_in(paused)


def _lost(now: datetime.datetime) -> ColumnElement[bool]:
    """An attempt whose worker stopped renewing its lease: the worker died (or hangs)."""
    return and_(AgentTask.status == TaskStatus.WORKING.value, AgentTask.lease_expires_at < now)


async def dispatch_all(tasks: TaskService, task_ids: Sequence[UUID], enqueue: Enqueue) -> None:
    """Queue tasks that were just written `pending`; a failure leaves them to the sweep."""
    for task_id in task_ids:
        try:
            await tasks.dispatch(task_id, [TaskStatus.PENDING], enqueue)
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise

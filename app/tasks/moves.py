"""Agent tasks' state transitions, the base of the task services.

Transitions are compare-and-set UPDATEs (`... WHERE status = … AND lease_token = …`), so that
concurrent workers, the sweep and redelivered jobs can never both win: the database decides.
Each transition writes its event in the same transaction and commits it (unless told not to), and
every new status is checked against the table of moves (`app.tasks.state`).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any
from uuid import UUID, uuid4

from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import ColumnElement, Executable, and_, case, select, update

from app.core.exceptions import is_unavailable_error
from app.db.repository import Repository
from app.events.services import EventService, record_event
from app.projects.models import Project, ProjectStatus
from app.tasks.models import AgentTask, TaskStatus
from app.tasks.state import TASK_MOVES

Enqueue = Callable[[UUID, str], Awaitable[None]]
LEASE_EXPIRED = "worker lost; requeued"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Lease:
    """A worker's claim on a running task; only its holder may report progress or finish it. `project`:
    the task's project as the claim read it (None: not read)."""

    def __init__(self, task: AgentTask, token: str, project: Project | None = None) -> None:
        self.task = task
        self.token = token
        self.project = project


class TaskMoves(SQLAlchemyAsyncRepositoryService[AgentTask]):
    class Repo(Repository[AgentTask]):
        model_type = AgentTask

    repository_type = Repo

    @property
    def events(self) -> EventService:
        return EventService.of(self.repository.session)

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
        return await self._apply(
            statement, None, message=message, progress=progress, event_type=event_type, commit=commit
        )

    async def _apply(
        self,
        statement: Executable,
        params: dict[str, Any] | None,
        *,
        message: str,
        progress: int | None,
        event_type: str = "task_progress_updated",
        commit: bool = True,
    ) -> AgentTask | None:
        """Run a transition's UPDATE .. RETURNING the task (built by `_transition`, or once with bind
        parameters for the hottest ones), record its event and commit (unless told not to)."""
        session = self.repository.session
        task: AgentTask | None = (await session.execute(statement, params)).scalar_one_or_none()
        return await self._moved(task, message=message, progress=progress, event_type=event_type, commit=commit)

    async def _moved(
        self,
        task: AgentTask | None,
        *,
        message: str,
        progress: int | None,
        event_type: str = "task_progress_updated",
        commit: bool = True,
    ) -> AgentTask | None:
        """After a transition's UPDATE: record its event and commit (unless told not to). None: it lost."""
        session = self.repository.session
        if task is None:
            if commit:
                await session.commit()  # end the transaction (and SQLite's write lock); nothing changed
            return None
        data = progress_data(task.id, task.agent_type, task.status, message, progress)
        record_event(session, event_type, project_id=task.project_id, task_id=task.id, data=data)
        if commit:
            await session.commit()
        return task

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

    async def queue_new(self, task_ids: Sequence[UUID]) -> list[tuple[UUID, str]]:
        """Mark these tasks queued if they are pending, each under a new job id (no commit): those the
        transaction added set queued before their INSERT, the others by one UPDATE. The queued jobs, in
        the order asked for.

        For the tasks a transaction wrote: the caller commits, then sends the jobs (`send_jobs`), so
        the transaction that makes a task makes it queued too, instead of a transaction of its own
        per task after the commit. A task whose job is never sent (a crash right after the commit)
        is queued again by the sweep.
        """
        if not task_ids:
            return []
        TASK_MOVES.check(TaskStatus.PENDING, TaskStatus.QUEUED)
        job_ids = {task_id: uuid4().hex for task_id in task_ids}
        session = self.repository.session
        now = utcnow()
        # Tasks this transaction added and has not flushed yet are inserted queued: no UPDATE.
        rows: dict[UUID, Any] = {}
        for added in session.new:
            if isinstance(added, AgentTask) and added.id in job_ids and added.status == TaskStatus.PENDING.value:
                for key, value in {**self._queued_values(job_ids[added.id]), "updated_at": now}.items():
                    setattr(added, key, value)
                rows[added.id] = added
        stored = [task_id for task_id in job_ids if task_id not in rows]
        if stored:
            job_of_row = case(*((AgentTask.id == task_id, job_ids[task_id]) for task_id in stored))
            values = {**self._queued_values(""), "job_id": job_of_row}
            statement = (
                update(AgentTask)
                .where(AgentTask.id.in_(stored), AgentTask.status == TaskStatus.PENDING.value)
                .values(updated_at=now, **values)
                .returning(AgentTask.id, AgentTask.project_id, AgentTask.agent_type)
                .execution_options(synchronize_session=False)
            )
            for row in await session.execute(statement):
                held = session.identity_map.get(session.identity_key(AgentTask, row.id))
                if held is not None:
                    session.expire(held)  # the row changed under it
                rows[row.id] = row
        jobs: list[tuple[UUID, str]] = []
        for task_id, job_id in job_ids.items():
            row = rows.get(task_id)
            if row is None:
                continue
            data = {"task_id": str(task_id), "agent_type": row.agent_type, "status": TaskStatus.QUEUED.value}
            await self.events.record(
                "task_progress_updated",
                project_id=row.project_id,
                task_id=task_id,
                data={**data, "message": "queued", "progress_percentage": 0},
            )
            jobs.append((task_id, job_id))
        return jobs

    async def send_jobs(self, jobs: Sequence[tuple[UUID, str]], enqueue: Enqueue) -> None:
        """Send the jobs of tasks committed as queued, all at once. A job the broker refuses puts its
        task back to pending for the sweep (a queue that is down); any other error is raised."""
        if not jobs:
            return
        sent = await asyncio.gather(*(enqueue(task_id, job_id) for task_id, job_id in jobs), return_exceptions=True)
        failure: BaseException | None = None
        for (task_id, job_id), result in zip(jobs, sent, strict=True):
            if not isinstance(result, BaseException):
                continue
            await self._transition(
                task_id,
                [TaskStatus.QUEUED],
                {"status": TaskStatus.PENDING.value, "job_id": None, "queued_at": None},
                where=AgentTask.job_id == job_id,
                message="task queue unavailable; will retry",
            )
            if not is_unavailable_error(result):
                failure = failure or result
        if failure is not None:
            raise failure

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


def progress_data(task_id: UUID, agent_type: str, status: str, message: str, progress: int | None) -> dict[str, Any]:
    """The payload of a transition's `task_progress_updated` event."""
    data: dict[str, Any] = {"task_id": str(task_id), "agent_type": agent_type, "status": status, "message": message}
    if progress is not None:
        data["progress_percentage"] = progress
    return data


def _not_stopped() -> ColumnElement[bool]:
    """Tasks of a project under an emergency stop (paused) are neither claimed nor requeued."""
    paused = select(Project.id).where(Project.status == ProjectStatus.PAUSED.value)
    return AgentTask.project_id.not_in(paused)


def _lost(now: datetime.datetime) -> ColumnElement[bool]:
    """An attempt whose worker stopped renewing its lease: the worker died (or hangs)."""
    return and_(AgentTask.status == TaskStatus.WORKING.value, AgentTask.lease_expires_at < now)

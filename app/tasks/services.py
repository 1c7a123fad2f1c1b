"""Agent tasks: creation and every state transition.

Transitions are compare-and-set UPDATEs (`... WHERE status = … AND lease_token = …`), so that
concurrent workers, the sweep and redelivered jobs can never both win: the database decides.
Each transition writes its event in the same transaction and commits it.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID, uuid4

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import ColumnElement, and_, or_, select, update

from app.artifacts.models import Artifact
from app.core.exceptions import InvalidInputError, NotFoundError, ServiceUnavailableError, is_unavailable_error
from app.events.services import EventService
from app.projects.models import Project
from app.tasks.models import AgentTask, TaskStatus
from app.tasks.schemas import TaskCreate

Enqueue = Callable[[UUID], Awaitable[str]]


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

    # -- creation ---------------------------------------------------------------------------

    async def submit(self, project_id: UUID, data: TaskCreate, enqueue: Enqueue) -> tuple[AgentTask, str]:
        """Store the task (pending) and commit, then enqueue it and mark it queued.

        The commit comes first so that a worker never receives a job for a row it cannot see.
        If the broker is down the task stays `pending` and the sweep enqueues it later.
        """
        task = await self._create(project_id, data)
        await self.repository.session.commit()
        try:
            job_id = await enqueue(task.id)
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise
            raise ServiceUnavailableError(
                f"The task queue is unavailable; task {task.id} is stored as pending and will be queued "
                "when the queue is back.",
                extra={"task_id": str(task.id), "component": "broker"},
            ) from exc
        await self.mark_queued(task.id, job_id)
        return task, job_id

    async def _create(self, project_id: UUID, data: TaskCreate) -> AgentTask:
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
            }
        )
        await self.events.record(
            "task_created",
            project_id=project_id,
            task_id=task.id,
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
        condition: ColumnElement[bool],
        values: dict[str, Any],
        *,
        message: str,
        progress: int | None = None,
        event_type: str = "task_progress_updated",
    ) -> AgentTask | None:
        """Apply `values` if `condition` still holds; record the event and commit. None: lost the race."""
        statement = (
            update(AgentTask)
            .where(AgentTask.id == task_id, condition)
            .values(updated_at=utcnow(), **values)
            .returning(AgentTask)
            # the session may hold this task already: take the row as the UPDATE left it
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        session = self.repository.session
        task = (await session.execute(statement)).scalar_one_or_none()
        if task is None:
            await session.rollback()
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
        await session.commit()
        return task

    async def mark_queued(self, task_id: UUID, job_id: str) -> AgentTask | None:
        return await self._transition(
            task_id,
            AgentTask.status == TaskStatus.PENDING.value,
            {"status": TaskStatus.QUEUED.value, "job_id": job_id, "queued_at": utcnow()},
            message="queued",
            progress=0,
        )

    async def claim(self, task_id: UUID, lease_seconds: float) -> Lease | None:
        """Start an attempt: pending/queued, or working with a lease that ran out, becomes ours."""
        now = utcnow()
        token = str(uuid4())
        claimable = or_(
            AgentTask.status.in_([TaskStatus.PENDING.value, TaskStatus.QUEUED.value]),
            and_(AgentTask.status == TaskStatus.WORKING.value, AgentTask.lease_expires_at < now),
        )
        task = await self._transition(
            task_id,
            claimable,
            {
                "status": TaskStatus.WORKING.value,
                "lease_token": token,
                "lease_expires_at": now + datetime.timedelta(seconds=lease_seconds),
                "heartbeat_at": now,
                "started_at": now,
                "attempts": AgentTask.attempts + 1,
            },
            message="working",
            progress=0,
        )
        return Lease(task, token) if task is not None else None

    def _held(self, lease: Lease) -> ColumnElement[bool]:
        return and_(AgentTask.status == TaskStatus.WORKING.value, AgentTask.lease_token == lease.token)

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
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def report_progress(self, lease: Lease, lease_seconds: float, progress: int, message: str) -> bool:
        now = utcnow()
        task = await self._transition(
            lease.task.id,
            self._held(lease),
            {"heartbeat_at": now, "lease_expires_at": now + datetime.timedelta(seconds=lease_seconds)},
            message=message,
            progress=progress,
        )
        return task is not None

    async def complete(self, lease: Lease, output: dict[str, Any]) -> AgentTask | None:
        """Finish the attempt. Accepted only from the current lease holder, so a task completes once."""
        return await self._transition(
            lease.task.id,
            self._held(lease),
            {
                "status": TaskStatus.COMPLETED.value,
                "output": output,
                "lease_token": None,
                "lease_expires_at": None,
                "finished_at": utcnow(),
            },
            message="completed",
            progress=100,
        )

    async def fail(self, lease: Lease, error: str) -> AgentTask | None:
        return await self._transition(
            lease.task.id,
            self._held(lease),
            {
                "status": TaskStatus.FAILED.value,
                "error": error,
                "lease_token": None,
                "lease_expires_at": None,
                "finished_at": utcnow(),
            },
            message=f"failed: {error}",
        )

    # -- sweep ------------------------------------------------------------------------------

    async def requeue_expired(self, limit: int = 100) -> list[UUID]:
        """Working tasks whose worker stopped renewing the lease go back to `queued`."""
        now = utcnow()
        expired = and_(AgentTask.status == TaskStatus.WORKING.value, AgentTask.lease_expires_at < now)
        candidates = list(
            await self.repository.session.scalars(select(AgentTask.id).where(expired).limit(limit))
        )
        requeued: list[UUID] = []
        for task_id in candidates:
            task = await self._transition(
                task_id,
                expired,
                {"status": TaskStatus.QUEUED.value, "lease_token": None, "lease_expires_at": None, "queued_at": now},
                message="worker lost; requeued",
            )
            if task is not None:
                requeued.append(task.id)
        return requeued

    async def stale_pending(self, older_than_seconds: float, limit: int = 100) -> list[UUID]:
        """Tasks stored but never enqueued (the broker was down when they were submitted)."""
        cutoff = utcnow() - datetime.timedelta(seconds=older_than_seconds)
        statement = (
            select(AgentTask.id)
            .where(AgentTask.status == TaskStatus.PENDING.value, AgentTask.created_at < cutoff)
            .order_by(AgentTask.id)
            .limit(limit)
        )
        task_ids = list(await self.repository.session.scalars(statement))
        await self.repository.session.rollback()  # end the read transaction before the sweep enqueues
        return task_ids

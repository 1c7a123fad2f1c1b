"""Agent tasks: reading them, creating and submitting them, cancelling them.

Every state transition is a compare-and-set (`app.tasks.moves`); the worker's lease is in
`app.tasks.leases`, the sweep and the parked tasks in `app.tasks.recovery`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import msgspec
from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.artifacts.models import Artifact
from app.core.exceptions import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
    is_unavailable_error,
)
from app.core.security import Principal
from app.db.base import new_id
from app.db.driver import DriverRead
from app.db.rows import row_by_id, struct_of
from app.events.outbox import EVENT_ORDER_LOCK, INSERT_ORDERED_AFTER_WRITTEN, committed, event_rows, written_in
from app.events.services import new_event
from app.projects.models import Project
from app.tasks.models import AgentTask, TaskStatus
from app.tasks.moves import LEASE_EXPIRED, Enqueue, Lease, utcnow
from app.tasks.recovery import TaskRecovery
from app.tasks.schemas import Task, TaskCreate
from app.tasks.state import TASK_MOVES

__all__ = [
    "LEASE_EXPIRED",
    "Enqueue",
    "Lease",
    "TaskService",
    "dispatch_all",
    "status_rows_of_project",
    "task_view",
    "utcnow",
]

_TASK_VIEW = row_by_id(AgentTask, Task)
# Built once, run by the driver on PostgreSQL (`DriverRead`): the status read is the hottest endpoint,
# polled by every client that follows a project.
_STATUS_ROWS = DriverRead(
    select(AgentTask.id, AgentTask.agent_type, AgentTask.status, AgentTask.created_at, AgentTask.updated_at)
    .select_from(Project)
    .outerjoin(AgentTask, AgentTask.project_id == Project.id)
    .where(Project.id == bindparam("project_id"))
    .order_by(AgentTask.id)
)


async def status_rows_of_project(connection: AsyncConnection, project_id: UUID) -> list[Sequence[Any]]:
    """(id, agent_type, status, created_at, updated_at) of the project's tasks in id order, in one
    round trip: the project left-joined to its tasks (no row: no such project). Columns on a bare
    connection, no ORM session or entities."""
    rows = await _STATUS_ROWS.rows(connection, {"project_id": project_id})
    if not rows:
        raise NotFoundError(f"Project {project_id} does not exist.")
    return [row for row in rows if row[0] is not None]


async def task_view(connection: AsyncConnection, task_id: UUID, principal: Principal) -> Task:
    """The task as the api answers it, read as columns (`row_by_id`) on a bare connection; 404
    outside the caller's scope."""
    rows = await _TASK_VIEW.rows(connection, {"id": task_id})
    task = struct_of(rows[0], Task) if rows else None
    if task is None or not principal.can_see(task.project_id):
        raise NotFoundError(f"Task {task_id} does not exist.")
    return task


# A task stored queued (`TaskService._store_queued`), then its events; no row: no such project.
# The project row is locked (KEY SHARE, as the foreign key check would at the end of the statement)
# as it is read, before the event-order lock: holding that lock, the statement never waits for a row
# lock (a transaction holding the project FOR UPDATE would wait for the order lock in turn: deadlock).
_QUEUED_TASK = """
    WITH written AS (
        INSERT INTO agent_task (
            id, project_id, agent_type, instructions, context_ids, status, attempts, job_id, timeout_seconds,
            queued_at, at_most_once, created_at, updated_at
        )
        SELECT :id, project.id, :agent_type, :instructions, CAST(:context_ids AS jsonb), 'queued', 0, :job_id,
            :timeout_seconds, :now, false, :now, :now
        FROM project WHERE project.id = :project_id FOR KEY SHARE
        RETURNING id
    )"""
_STORE_QUEUED = text(_QUEUED_TASK + INSERT_ORDERED_AFTER_WRITTEN).bindparams(
    bindparam("id", type_=AgentTask.__table__.c.id.type),
    bindparam("project_id", type_=AgentTask.__table__.c.project_id.type),
    bindparam("now", type_=AgentTask.__table__.c.created_at.type),
)
_encoder = msgspec.json.Encoder()


class TaskService(TaskRecovery):
    async def get_task(self, task_id: UUID) -> AgentTask:
        # `Session.get`: the mapper's statement by primary key, built once (a filter built per call was
        # a tenth of a task read's CPU).
        task: AgentTask | None = await self.repository.session.get(AgentTask, task_id)
        if task is None:
            raise NotFoundError(f"Task {task_id} does not exist.")
        return task

    async def tasks_of_project(self, project_id: UUID) -> Sequence[AgentTask]:
        if await self.repository.session.get(Project, project_id) is None:
            raise NotFoundError(f"Project {project_id} does not exist.")
        statement = select(AgentTask).where(AgentTask.project_id == project_id).order_by(AgentTask.id)
        return list(await self.repository.session.scalars(statement))

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
        session = self.repository.session
        job_id = uuid4().hex
        if session.get_bind().dialect.name == "postgresql":
            task_id = await self._store_queued(project_id, data, job_id, default_timeout=default_timeout, actor=actor)
        else:
            task = await self.create_task(project_id, data, default_timeout=default_timeout, actor=actor)
            task_id = task.id
            await self._transition(
                task_id,
                [TaskStatus.PENDING],
                self._queued_values(job_id),
                message="queued",
                progress=0,
                commit=False,
            )
            await session.commit()
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

    async def _store_queued(
        self, project_id: UUID, data: TaskCreate, job_id: str, *, default_timeout: int, actor: str | None
    ) -> UUID:
        """PostgreSQL: `create_task` and the move to queued in one statement, committed, events published.

        The same row and events as the two steps (`task_created` as pending, then `task_progress_updated`
        as queued), in one round trip instead of seven (BEGIN, the project, the INSERT and its
        refresh, the UPDATE, the events, COMMIT). Run on a connection of its own outside a
        transaction block, the statement commits by itself and the event-order lock is held only
        while the server executes and commits it (`app.events.outbox`); the ORM session is not
        involved. A session that has begun a transaction (context ids read, or a caller's work)
        runs it in that transaction and commits.
        """
        TASK_MOVES.check(TaskStatus.PENDING, TaskStatus.QUEUED)
        session = self.repository.session
        await self._check_context_ids(project_id, data.context_ids)  # a read first, only if there are any
        task_id: UUID = new_id(AgentTask)
        agent_type = data.agent_type.value
        now = utcnow()
        events = [
            new_event(
                "task_created",
                project_id=project_id,
                task_id=task_id,
                actor=actor,
                data={"task_id": str(task_id), "agent_type": agent_type, "status": TaskStatus.PENDING.value},
            ),
            new_event(
                "task_progress_updated",
                project_id=project_id,
                task_id=task_id,
                data={
                    "task_id": str(task_id),
                    "agent_type": agent_type,
                    "status": TaskStatus.QUEUED.value,
                    "message": "queued",
                    "progress_percentage": 0,
                },
            ),
        ]
        params = {
            "id": task_id,
            "project_id": project_id,
            "agent_type": agent_type,
            "instructions": data.instructions,
            "context_ids": _encoder.encode([str(artifact_id) for artifact_id in data.context_ids]).decode(),
            "job_id": job_id,
            "timeout_seconds": data.timeout_seconds or default_timeout,
            "now": now,
            "event_rows": event_rows(events),
            "event_order_lock": EVENT_ORDER_LOCK,
        }
        engine = session.bind
        if isinstance(engine, AsyncEngine) and not session.in_transaction():
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                ids = list((await connection.execute(_STORE_QUEUED, params)).scalars())
            if not ids:
                raise NotFoundError(f"Project {project_id} does not exist.")
            committed(session.sync_session, events, ids)
            return task_id
        connection = await session.connection()
        ids = list((await connection.execute(_STORE_QUEUED, params)).scalars())
        if not ids:
            raise NotFoundError(f"Project {project_id} does not exist.")
        written_in(session.sync_session, events, ids)
        await session.commit()
        return task_id

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
        context_read: bool = False,
    ) -> AgentTask:
        """Store a task `pending` with its `task_created` event (no commit, not yet queued).

        `context_read`: `context_ids` are what the caller read from the project's live artifacts in this
        transaction, and the execution's own idea (a workflow step's inputs): not looked up again.
        """
        session = self.repository.session
        if await session.get(Project, project_id) is None:
            raise NotFoundError(f"Project {project_id} does not exist.")
        if not context_read:
            await self._check_context_ids(project_id, data.context_ids)
        now = utcnow()
        # Added, not flushed: its INSERT goes with the transaction's next flush (the tasks of a
        # step in one statement), and a task queued in the same transaction is inserted queued
        # (`queue_new`). Every column is set here, the id too (no refresh, nothing to read back).
        task = AgentTask(
            id=new_id(AgentTask),
            project_id=project_id,
            agent_type=data.agent_type.value,
            instructions=data.instructions,
            context_ids=[str(artifact_id) for artifact_id in data.context_ids],
            status=TaskStatus.PENDING.value,
            attempts=0,
            timeout_seconds=data.timeout_seconds or default_timeout,
            workflow_execution_id=workflow_execution_id,
            step_id=step_id,
            at_most_once=at_most_once,
            feedback=feedback,
            redo_of=redo_of,
            mediates=mediates,
            brief=brief,
            created_at=now,
            updated_at=now,
        )
        session.add(task)
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


async def dispatch_all(tasks: TaskService, task_ids: Sequence[UUID], enqueue: Enqueue) -> None:
    """Queue tasks that were just written `pending`; a failure leaves them to the sweep."""
    for task_id in task_ids:
        try:
            await tasks.dispatch(task_id, [TaskStatus.PENDING], enqueue)
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise

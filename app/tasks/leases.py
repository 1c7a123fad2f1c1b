"""A worker's lease on a task: claiming it, holding it, and ending the attempt (complete, fail, hand back)."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence
from typing import Any, TypeVar
from uuid import UUID, uuid4

from sqlalchemy import CTE, ColumnElement, Executable, Table, Update, and_, bindparam, or_, select, update
from sqlalchemy.orm import make_transient_to_detached

from app.db.base import entity_of
from app.db.rows import Along
from app.projects.models import Project, ProjectStatus
from app.tasks.models import AgentTask, TaskStatus
from app.tasks.moves import Enqueue, Lease, TaskMoves, _not_stopped, utcnow
from app.tasks.state import TASK_MOVES

_TASKS: Table = AgentTask.__table__  # type: ignore[assignment]
_PROJECTS: Table = Project.__table__  # type: ignore[assignment]
# The message of the claim's `task_progress_updated` event.
CLAIM_MESSAGE = "working"
ModelT = TypeVar("ModelT")


class TaskLeases(TaskMoves):
    async def claim(self, task_id: UUID, lease_seconds: float, *, commit: bool = True) -> Lease | None:
        """Start an attempt: pending/queued, or working with a lease that ran out, becomes ours.

        With `commit=False` the caller adds the attempt's first reads and writes to the transaction.
        """
        params = claim_parameters(task_id, lease_seconds)
        token = params["token"]
        session = self.repository.session
        project: Project | None = None
        if session.get_bind().dialect.name == "postgresql":
            # The task and its project in one round trip: the attempt reads the project first thing.
            row = (await session.execute(_claim_with_project(), params)).first()
            task, project = row if row is not None else (None, None)
        else:
            task = (await session.execute(_claim_statement(), params)).scalar_one_or_none()
        task = await self._moved(task, message=CLAIM_MESSAGE, progress=0, commit=commit)
        return Lease(task, token, project) if task is not None else None

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
        along: Along | None = None,
    ) -> AgentTask | None:
        """Finish the attempt. Accepted only from the current lease holder, so a task completes once.

        `status` is `waiting_for_hitl` when the agent asked a question: the work is stored, a person answers.
        `along` (PostgreSQL): rows written by the same statement whether or not the lease still holds
        (the caller rolls back if it does not).
        """
        params = completion_parameters(lease, output, status, error)
        message, progress = completion_message(status)
        statement = _complete_statement(along[0] if along is not None else ())
        return await self._apply(
            statement,
            {**params, **along[1]} if along is not None else params,
            message=message,
            progress=progress,
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


# The two transitions of every attempt, built once with bind parameters (building an UPDATE with
# its conditions was a few percent of a worker's CPU per task). The others go through `_transition`.
# Each is a core UPDATE of the table that returns the row, read into the task's entity by an ORM
# select from that statement: an ORM-enabled UPDATE is copied by SQLAlchemy on every execution,
# and the copy's cache key generated anew (4 % of a worker's CPU for these two).


def _status_is(*statuses: TaskStatus) -> ColumnElement[bool]:
    """`status IN (…)` as equalities: an IN list is an expanding parameter, rendered anew for every
    execution of a statement built once."""
    return or_(*(AgentTask.status == status.value for status in statuses))


def _returning_task(statement: Update) -> Executable:
    """`statement` returning every column of the task, as the task (the session's copy refreshed)."""
    returning = statement.returning(*AgentTask.__table__.columns)
    return select(AgentTask).from_statement(returning).execution_options(populate_existing=True)


def _claim(project_joined: bool) -> Update:
    for source in (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.WORKING):
        TASK_MOVES.check(source, TaskStatus.WORKING)
    now = bindparam("now", type_=AgentTask.__table__.c.started_at.type)
    lost = and_(AgentTask.status == TaskStatus.WORKING.value, AgentTask.lease_expires_at < now)
    claimable = or_(
        _status_is(TaskStatus.PENDING, TaskStatus.QUEUED),
        and_(lost, AgentTask.at_most_once.is_(False)),
    )
    # Not under an emergency stop; the project joined (UPDATE … FROM project) or looked up.
    not_stopped = (
        and_(Project.id == AgentTask.project_id, Project.status != ProjectStatus.PAUSED.value)
        if project_joined
        else _not_stopped()
    )
    sources = [TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.WORKING]
    return (
        update(_TASKS)
        .where(AgentTask.id == bindparam("task_id"), _status_is(*sources), claimable, not_stopped)
        .values(
            status=TaskStatus.WORKING.value,
            lease_token=bindparam("token"),
            lease_expires_at=bindparam("expires"),
            heartbeat_at=now,
            started_at=now,
            attempts=AgentTask.attempts + 1,
            updated_at=now,
        )
    )


def claim_parameters(task_id: UUID, lease_seconds: float) -> dict[str, Any]:
    """The bind parameters of the claim (`claimed_cte` too): the task, now, the new lease's token and end."""
    now = utcnow()
    return {
        "task_id": task_id,
        "now": now,
        "token": str(uuid4()),
        "expires": now + datetime.timedelta(seconds=lease_seconds),
    }


@functools.cache
def claimed_cte() -> CTE:
    """PostgreSQL: the claim as the CTE `claimed` (the task's columns, then its project's), for a
    statement that writes what follows from it too (`claim_parameters`; `lease_of_claimed`)."""
    return _claim(project_joined=True).returning(*_TASKS.columns, *_PROJECTS.columns).cte("claimed")


_TASK_KEYS = [AgentTask.__mapper__.get_property_by_column(column).key for column in _TASKS.columns]
_PROJECT_KEYS = [Project.__mapper__.get_property_by_column(column).key for column in _PROJECTS.columns]


def lease_of_claimed(row: Sequence[Any], token: str) -> Lease:
    """The lease of a row of `claimed_cte` (its first columns), its task and project detached entities
    as if loaded, not tied to a session."""
    task = _loaded(AgentTask, dict(zip(_TASK_KEYS, row, strict=False)))
    project = _loaded(Project, dict(zip(_PROJECT_KEYS, row[len(_TASK_KEYS) :], strict=False)))
    return Lease(task, token, project)


def _loaded(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """An entity of `model` from the values of all its columns, detached, as a load makes it."""
    entity = entity_of(model, values)
    make_transient_to_detached(entity)
    return entity


@functools.cache
def _claim_statement() -> Executable:
    return _returning_task(_claim(project_joined=False))


@functools.cache
def _claim_with_project() -> Executable:
    """PostgreSQL: the claim returning the task's row and its project's (as read, not locked), as both
    entities. (SQLite's RETURNING cannot name a joined table.)"""
    claim = _claim(project_joined=True).returning(*_TASKS.columns, *_PROJECTS.columns)
    return select(AgentTask, Project).from_statement(claim).execution_options(populate_existing=True)


def completion_parameters(
    lease: Lease, output: dict[str, Any], status: TaskStatus, error: str | None
) -> dict[str, Any]:
    """The bind parameters of the completion (`completed_cte` too)."""
    TASK_MOVES.check(TaskStatus.WORKING, status)
    now = utcnow()
    return {
        "task_id": lease.task.id,
        "token": lease.token,
        "status": status.value,
        "output": output,
        "error": error,
        "finished_at": now if status == TaskStatus.COMPLETED else None,
        "now": now,
    }


def completion_message(status: TaskStatus) -> tuple[str, int | None]:
    """The message and progress of the completion's `task_progress_updated` event."""
    return ("completed", 100) if status == TaskStatus.COMPLETED else ("waiting for a human answer", None)


@functools.cache
def completed_cte() -> CTE:
    """PostgreSQL: the completion as the CTE `completed` (the task's columns), for a statement that
    writes what follows from it too (`completion_parameters`; `task_of_completed`). Rows inserted
    along it in a statement that commits by itself are guarded by it (`app.db.rows.IF_COMPLETED`)."""
    return _complete().returning(*_TASKS.columns).cte("completed")


def task_of_completed(row: Sequence[Any]) -> AgentTask:
    """The task of a row of `completed_cte` (its first columns), a detached entity as if loaded."""
    return _loaded(AgentTask, dict(zip(_TASK_KEYS, row, strict=False)))


def _complete() -> Update:
    return (
        update(_TASKS)
        .where(
            AgentTask.id == bindparam("task_id"),
            AgentTask.status == TaskStatus.WORKING.value,
            AgentTask.lease_token == bindparam("token"),
        )
        .values(
            status=bindparam("status"),
            output=bindparam("output"),
            error=bindparam("error"),
            lease_token=None,
            lease_expires_at=None,
            finished_at=bindparam("finished_at"),
            updated_at=bindparam("now"),
        )
    )


@functools.cache
def _complete_statement(along: tuple[CTE, ...] = ()) -> Executable:
    """The completion; `along`: INSERTs, as CTEs, that the statement makes too (`Along`)."""
    complete = _complete()
    return _returning_task(complete.add_cte(*along) if along else complete)

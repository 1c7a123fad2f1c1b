"""Bringing tasks back: the sweep's requeues, and at-most-once tasks cut off mid-attempt or held for a person."""

from __future__ import annotations

import datetime
from uuid import UUID

from sqlalchemy import ColumnElement, and_, select

from app.tasks.leases import TaskLeases
from app.tasks.models import AgentTask, TaskStatus
from app.tasks.moves import LEASE_EXPIRED, Enqueue, _lost, _not_stopped, utcnow


class TaskRecovery(TaskLeases):
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

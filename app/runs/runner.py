"""Runs one task attempt under a lease: the agent works, a watcher keeps the lease and listens.

The watcher renews the lease (heartbeat), sends a progress event while a long call runs, and
checks twice a second whether the task is still ours. A task that was cancelled, timed out by the
sweep, or handed to another worker stops at once: its running model call is cancelled, not waited
for, and nothing it would have written is written.

A stopping worker (SIGTERM) lets its attempts run for its grace period; then `Attempts.hand_back`
stops those still running and each is queued again at once for another worker, instead of
waiting for its lease to run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from uuid import UUID

import structlog
from sqlalchemy import select

from app.agents.models import AgentState
from app.core.exceptions import is_unavailable_error
from app.core.runtime import Runtime
from app.db.engine import reading_only
from app.hitl.models import HitlKind, Urgency
from app.runs.control import park_interrupted_task
from app.runs.executor import AgentExecutor, TaskFailedError
from app.runs.outcome import AttemptOutcome, ErrorNotice, HumanHold, on_attempt_outcome
from app.runs.provider import services
from app.tasks.models import AgentTask, TaskStatus
from app.tasks.services import Enqueue, Lease

logger = structlog.get_logger(__name__)

WATCH_INTERVAL_SECONDS = 0.5


class TaskRunner:
    def __init__(self, runtime: Runtime, enqueue: Enqueue) -> None:
        self.runtime = runtime
        self.enqueue = enqueue
        self.lease_seconds = runtime.settings.worker.lease_seconds

    async def run(self, task_id: UUID) -> None:
        if self.runtime.attempts.draining:
            # The worker is stopping: another one starts the task (this job is acknowledged).
            async with self.runtime.session() as session:
                await self._dispatch_safely(services(session).tasks.requeue_unstarted(task_id, self.enqueue), task_id)
            logger.info("task_left_to_another_worker", task_id=str(task_id))
            return
        executor: AgentExecutor | None = None
        async with self.runtime.session() as session:
            # The claim and the agent's status (working on it) commit together; then what the attempt reads.
            lease = await services(session).agents.start_attempt(task_id, self.lease_seconds)
            if lease is not None:
                executor = AgentExecutor(self.runtime, lease)
                with reading_only():  # on PostgreSQL without BEGIN and ROLLBACK, on SQLite without the write lock
                    await executor.load(session)
        if lease is None or executor is None:
            # Already done, cancelled, or held by a live worker: a redelivered job has nothing to do.
            logger.info("task_not_claimable", task_id=str(task_id))
            return
        log = logger.bind(task_id=str(task_id), attempt=lease.task.attempts)
        log.info("task_started")
        lost = asyncio.Event()
        work = asyncio.create_task(executor.execute())
        watcher = asyncio.create_task(self._watch(lease, work, lost, executor.finishing, executor.heartbeat))
        handing_back = asyncio.Event()

        def hand_back() -> None:
            handing_back.set()
            if not executor.finishing.is_set():  # a result being written is let finish
                work.cancel()

        self.runtime.attempts.add(task_id, hand_back)
        follow_ups: list[tuple[UUID, str]] = []
        try:
            follow_ups = await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we ourselves are being cancelled: the lease runs out, the task comes back
            if handing_back.is_set():
                log.info("task_handed_back", reason="the worker is stopping")
                await self._hand_back(lease)
            elif lost.is_set():
                log.info("task_stopped", reason="no longer ours (cancelled, timed out or reassigned)")
                await self._settle_agent(lease)
            else:
                raise
        except TaskFailedError as exc:
            if exc.code == "project_gone":
                await self._fail(lease, str(exc), code=exc.code)
            else:
                await self._park_failure(lease, exc)
        except Exception as exc:
            log.exception("task_crashed")
            await self._fail(lease, f"{type(exc).__name__}: {exc}", code="crashed")
        finally:
            self.runtime.attempts.remove(task_id)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if follow_ups:
            # Committed as queued with the result; their jobs are sent only now, with the watcher
            # gone: nothing may cancel a half-sent job (the sweep would find it queued only after
            # BOTARMY_QUEUED_REQUEUE_SECONDS).
            async with self.runtime.session() as session:
                await services(session).tasks.send_jobs(follow_ups, self.enqueue)

    async def _hand_back(self, lease: Lease) -> None:
        """The worker stops before the attempt finished: the task is queued again at once, for another
        worker. An at-most-once task may have partly acted outside the server: a person decides."""
        async with self.runtime.session() as session:
            tasks = services(session).tasks
            if not await tasks.lock_held(lease):
                await session.rollback()  # it finished, or is no longer ours
                return
            task = lease.task
            if task.at_most_once:
                await park_interrupted_task(
                    session, self.runtime.settings, task.id, grace_seconds=None, why="its worker stopped"
                )
                await session.commit()
                return
            # In the transaction that queues it again: the next worker's WORKING comes after this.
            await services(session).agents.set_status(task.project_id, task.agent_type, AgentState.IDLE)
            await self._dispatch_safely(tasks.hand_back(lease, self.enqueue), task.id)
        await self.runtime.counters.add("tasks_handed_back")

    @staticmethod
    async def _dispatch_safely(dispatch: Awaitable[str | None], task_id: UUID) -> None:
        """A queue that is down leaves the task pending, for the sweep of a running worker."""
        try:
            await dispatch
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise
            logger.warning("task_left_pending", task_id=str(task_id), reason=type(exc).__name__)

    async def _fail(self, lease: Lease, error: str, *, code: str) -> None:
        async with self.runtime.session() as session:
            task = await services(session).tasks.fail(lease, error, commit=False)
            if task is None:
                await session.rollback()
                return
            outcome = AttemptOutcome(agent_state=AgentState.ERROR, notice=ErrorNotice(message=error, code=code))
            await on_attempt_outcome(session, self.runtime.settings, task, outcome)
            await session.commit()

    async def _park_failure(self, lease: Lease, exc: TaskFailedError) -> None:
        """Every attempt failed: the task waits for a human with the failure (approve: try again)."""
        async with self.runtime.session() as session:
            output = {"failed": str(exc), "code": exc.code}
            task = await services(session).tasks.complete(
                lease, output, status=TaskStatus.WAITING_FOR_HITL, error=str(exc), commit=False
            )
            if task is None:
                await session.rollback()
                return
            question = (
                f"The {task.agent_type} task failed after its retries: {exc}. Approve to try it again "
                "(after fixing the cause), reject to let it fail."
            )
            hold = HumanHold(
                kind=HitlKind.TASK_FAILURE,
                question=question,
                options=("approve", "reject"),
                urgency=Urgency.HIGH,
                actor="worker",
            )
            outcome = AttemptOutcome(
                agent_state=AgentState.ERROR, hold=hold, notice=ErrorNotice(message=str(exc), code=exc.code)
            )
            await on_attempt_outcome(session, self.runtime.settings, task, outcome)
            await session.commit()

    async def _settle_agent(self, lease: Lease) -> None:
        """The attempt was taken away: the agent is idle again, or in error if the task timed out."""
        async with self.runtime.session() as session:
            status = await session.scalar(select(AgentTask.status).where(AgentTask.id == lease.task.id))
            state = AgentState.ERROR if status == TaskStatus.FAILED.value else AgentState.IDLE
            await services(session).agents.set_status(lease.task.project_id, lease.task.agent_type, state)
            await session.commit()

    async def _watch(
        self,
        lease: Lease,
        work: asyncio.Task[list[tuple[UUID, str]]],
        lost: asyncio.Event,
        finishing: asyncio.Event,
        heartbeat: asyncio.Lock,
    ) -> None:
        renew_every = self.lease_seconds / 3
        progress_every = self.runtime.settings.models.progress_interval_seconds
        last_renewal = last_progress = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            now = time.monotonic()
            try:
                async with heartbeat, self.runtime.session() as session:  # not while the result is written
                    tasks = services(session).tasks
                    if now - last_progress >= progress_every:
                        held = await tasks.report_progress(
                            lease, self.lease_seconds, None, "working: waiting for the model"
                        )
                        last_progress = last_renewal = now
                    elif now - last_renewal >= renew_every:
                        held = await tasks.renew_lease(lease, self.lease_seconds)
                        last_renewal = now
                    else:
                        held = await tasks.holds(lease)
            except Exception:  # the database may be briefly away; the lease has slack for that
                logger.warning("heartbeat_failed", task_id=str(lease.task.id), exc_info=True)
                continue
            if not held:
                if finishing.is_set():
                    return  # the attempt is writing its result and checks the lease itself
                lost.set()
                work.cancel()
                return

"""Runs one task attempt under a lease, with heartbeats, exactly one completion."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from uuid import UUID

import structlog

from app.tasks.services import Lease, TaskService
from app.worker.runtime import Runtime

logger = structlog.get_logger(__name__)

PROGRESS_STEPS = (25, 50, 75)


class LeaseLostError(Exception):
    """The task was given to someone else (or cancelled) while we worked on it."""


class TaskRunner:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.lease_seconds = runtime.settings.worker.lease_seconds

    async def run(self, task_id: UUID) -> None:
        async with self.runtime.session() as session:
            lease = await TaskService(session=session).claim(task_id, self.lease_seconds)
        if lease is None:
            # Already done, cancelled, or held by a live worker: a redelivered job has nothing to do.
            logger.info("task_not_claimable", task_id=str(task_id))
            return
        log = logger.bind(task_id=str(task_id), attempt=lease.task.attempts)
        log.info("task_started")
        lost = asyncio.Event()
        work = asyncio.create_task(self._perform(lease))
        heartbeat = asyncio.create_task(self._heartbeat(lease, work, lost))
        try:
            output = await work
        except LeaseLostError:
            log.warning("task_lease_lost")
            return
        except asyncio.CancelledError:
            if lost.is_set():  # the heartbeat found the lease gone and stopped the work
                log.warning("task_lease_lost")
                return
            raise  # we ourselves are being cancelled (shutdown)
        except Exception as exc:
            log.exception("task_failed")
            async with self.runtime.session() as session:
                await TaskService(session=session).fail(lease, f"{type(exc).__name__}: {exc}")
            return
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        async with self.runtime.session() as session:
            done = await TaskService(session=session).complete(lease, output)
        log.info("task_completed" if done else "task_result_discarded")

    async def _heartbeat(self, lease: Lease, work: asyncio.Task[dict[str, Any]], lost: asyncio.Event) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.runtime.session() as session:
                    held = await TaskService(session=session).renew_lease(lease, self.lease_seconds)
            except Exception:  # the database may be briefly away; the lease has slack for that
                logger.warning("heartbeat_failed", task_id=str(lease.task.id), exc_info=True)
                continue
            if not held:
                lost.set()
                work.cancel()
                return

    async def _perform(self, lease: Lease) -> dict[str, Any]:
        """Placeholder work until agents arrive: progress events over a configured duration."""
        duration = self.runtime.settings.worker.placeholder_work_seconds
        for progress in PROGRESS_STEPS:
            await asyncio.sleep(duration / (len(PROGRESS_STEPS) + 1))
            async with self.runtime.session() as session:
                held = await TaskService(session=session).report_progress(
                    lease, self.lease_seconds, progress, f"{progress}% done"
                )
            if not held:
                raise LeaseLostError
        await asyncio.sleep(duration / (len(PROGRESS_STEPS) + 1))
        return {"summary": f"{lease.task.agent_type} finished: {lease.task.instructions[:200]}"}

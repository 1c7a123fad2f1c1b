"""The periodic sweep: bring back tasks whose worker died, enqueue tasks the broker missed."""

from __future__ import annotations

import asyncio

import structlog

from app.core.exceptions import is_unavailable_error
from app.tasks.jobs import enqueue_agent_task
from app.tasks.services import TaskService
from app.worker.runtime import Runtime

logger = structlog.get_logger(__name__)


async def sweep_once(runtime: Runtime) -> int:
    """One pass; safe to run in several processes at once (every transition is compare-and-set)."""
    worker = runtime.settings.worker
    async with runtime.session() as session:
        service = TaskService(session=session)
        requeued = await service.requeue_expired()
        for task_id in requeued:
            await enqueue_agent_task(runtime.broker, task_id)
        pending = await service.stale_pending(worker.pending_requeue_seconds)
        for task_id in pending:
            job_id = await enqueue_agent_task(runtime.broker, task_id)
            await service.mark_queued(task_id, job_id)
    if requeued or pending:
        logger.info("sweep", requeued=len(requeued), enqueued_pending=len(pending))
    return len(requeued) + len(pending)


async def run_sweeper(runtime: Runtime) -> None:
    interval = runtime.settings.worker.sweep_interval_seconds
    while True:
        try:
            await sweep_once(runtime)
        except Exception as exc:
            if not is_unavailable_error(exc):
                logger.exception("sweep_failed")
            else:
                logger.warning("sweep_skipped", reason=type(exc).__name__)
        await asyncio.sleep(interval)

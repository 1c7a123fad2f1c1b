"""The periodic sweep: bring back tasks whose worker died, enqueue tasks the broker missed."""

from __future__ import annotations

import asyncio

import structlog

from app.core.exceptions import is_unavailable_error
from app.tasks.jobs import agent_task_enqueuer
from app.tasks.services import TaskService
from app.worker.runtime import Runtime

logger = structlog.get_logger(__name__)


async def sweep_once(runtime: Runtime) -> int:
    worker = runtime.settings.worker
    async with runtime.session() as session:
        dispatched = await TaskService(session=session).sweep(
            agent_task_enqueuer(runtime.broker),
            pending_after=worker.pending_requeue_seconds,
            queued_after=worker.queued_requeue_seconds,
        )
    if dispatched:
        logger.info("sweep_requeued", tasks=dispatched)
    return dispatched


async def run_sweeper(runtime: Runtime) -> None:
    interval = runtime.settings.worker.sweep_interval_seconds
    while True:
        try:
            await sweep_once(runtime)
        except Exception as exc:
            if is_unavailable_error(exc):
                logger.warning("sweep_skipped", reason=type(exc).__name__)
            else:
                logger.exception("sweep_failed")
        await asyncio.sleep(interval)

"""The worker process: `taskiq worker app.worker.main:broker app.worker.registry`.

`botarmy worker` runs exactly that. The worker builds its own runtime (engine, publisher) at
WORKER_STARTUP and runs the sweep beside the jobs; it never imports the web app.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from litestar.channels.backends.base import ChannelsBackend
from taskiq import TaskiqEvents, TaskiqState

from app.config import get_settings
from app.core.channels import BackendPublisher, build_channels_backend
from app.core.logging import configure_logging
from app.db.engine import build_db_config
from app.events.services import payload_checks
from app.tasks.sweeper import run_sweeper
from app.worker.broker import build_broker
from app.worker.runtime import Runtime

settings = get_settings()
broker = build_broker(settings)
logger = structlog.get_logger("app.worker")


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def startup(state: TaskiqState) -> None:
    configure_logging(settings.app, settings.models.secrets())
    payload_checks.strict = settings.app.env != "production"
    backend: ChannelsBackend = build_channels_backend(settings.redis)
    publisher = BackendPublisher(backend)
    await publisher.start()
    runtime = Runtime(
        settings=settings, db_config=build_db_config(settings.db, publisher), broker=broker, publisher=publisher
    )
    state.runtime = runtime
    state.publisher = publisher
    state.sweeper = asyncio.create_task(run_sweeper(runtime))
    logger.info("worker_started", worker_id=runtime.worker_id)


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def shutdown(state: TaskiqState) -> None:
    state.sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await state.sweeper
    await state.publisher.stop()
    await state.runtime.db_config.get_engine().dispose()
    logger.info("worker_stopped")

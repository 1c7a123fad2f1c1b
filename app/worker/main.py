"""The worker process: `taskiq worker app.worker.main:broker app.worker.registry`.

`botarmy worker` runs exactly that, under `app.worker.process`. The worker builds its own runtime
(engine, publisher) at WORKER_STARTUP and runs the sweep beside the jobs; it never imports the
web app.

Stopping (SIGTERM or SIGINT): taskiq stops taking jobs and waits for the running ones up to
`--wait-tasks-timeout` (the grace period less `HAND_BACK_SECONDS`); then WORKER_SHUTDOWN hands
back what still runs (`Attempts.hand_back`): each such task is queued again at once for another
worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from types import FrameType
from typing import Any

import structlog
from litestar.channels.backends.base import ChannelsBackend
from redis.asyncio import Redis
from taskiq import TaskiqEvents, TaskiqState

from app import models  # noqa: F401 - every mapper, so that foreign keys resolve in any process
from app.config import get_settings
from app.core.broker import build_broker
from app.core.channels import BackendPublisher, build_channels_backend
from app.core.instruments import SharedCounters
from app.core.logging import configure_logging
from app.core.runtime import Runtime
from app.db.engine import build_db_config
from app.events.services import payload_checks
from app.runs.sweeper import run_sweeper
from app.worker.process import HAND_BACK_SECONDS

settings = get_settings()
broker = build_broker(settings)
logger = structlog.get_logger("app.worker")


def _on_stop_signals(runtime: Runtime) -> None:
    """Mark the runtime draining on the first SIGTERM/SIGINT, then let taskiq's handler stop the receiver.

    Later signals change nothing (taskiq's would raise KeyboardInterrupt in the middle of the
    hand-back after a few): the supervisor kills a worker that outlives its grace period.
    """
    stop_receiver: dict[int, Any] = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if runtime.attempts.draining:
            return
        runtime.attempts.draining = True
        logger.info("worker_stopping", signal=signal.Signals(signum).name, running=len(runtime.attempts))
        handler = stop_receiver[signum]
        if callable(handler):
            handler(signum, frame)

    for sig in stop_receiver:
        signal.signal(sig, on_signal)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def startup(state: TaskiqState) -> None:
    configure_logging(settings.app, settings.models.secrets())
    payload_checks.strict = settings.app.env != "production"
    backend: ChannelsBackend = build_channels_backend(settings.redis)
    publisher = BackendPublisher(backend)
    await publisher.start()
    redis = Redis.from_url(settings.redis.url, socket_connect_timeout=5) if settings.redis.url else None
    runtime = Runtime(
        settings=settings,
        db_config=build_db_config(settings.db, publisher),
        broker=broker,
        publisher=publisher,
        counters=SharedCounters(redis, settings.redis.namespace),
    )
    state.runtime = runtime
    state.publisher = publisher
    state.sweeper = asyncio.create_task(run_sweeper(runtime))
    _on_stop_signals(runtime)
    logger.info("worker_started", worker_id=runtime.worker_id)


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def shutdown(state: TaskiqState) -> None:
    runtime: Runtime = state.runtime
    runtime.attempts.draining = True
    handed_back = await runtime.attempts.hand_back(wait_seconds=HAND_BACK_SECONDS - 1.5)
    if handed_back:
        logger.info("worker_handed_back", tasks=handed_back)
    state.sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await state.sweeper
    await state.publisher.stop()
    await runtime.db_config.get_engine().dispose()
    if runtime.counters.redis is not None:
        await runtime.counters.redis.aclose()
    logger.info("worker_stopped")

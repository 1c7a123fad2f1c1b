"""The taskiq broker, from settings. Never imports the web app."""

from __future__ import annotations

from typing import Any

import structlog
from taskiq import AsyncBroker, InMemoryBroker, TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq_redis import RedisStreamBroker

from app.config import Settings

logger = structlog.get_logger("app.worker")


class JobLoggingMiddleware(TaskiqMiddleware):
    """Per-job log context, and one line per job with its outcome and duration."""

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        structlog.contextvars.bind_contextvars(job_id=message.task_id, job_name=message.task_name)
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        logger.info(
            "job_finished",
            job_id=message.task_id,
            job_name=message.task_name,
            is_err=result.is_err,
            duration_s=round(result.execution_time, 4),
        )
        structlog.contextvars.unbind_contextvars("job_id", "job_name")


def build_broker(settings: Settings) -> AsyncBroker:
    if settings.redis.url is None:
        broker: AsyncBroker = InMemoryBroker()
    else:
        namespace = settings.redis.namespace
        broker = RedisStreamBroker(
            url=settings.redis.url,
            queue_name=f"{namespace}:jobs",
            consumer_group_name=f"{namespace}:workers",
            xread_block=1000,
            # Messages a killed worker never acknowledged are reclaimed after this long. The
            # database lease and the sweep are what bring a task back quickly; this is a backstop.
            idle_timeout=300_000,
            unacknowledged_lock_timeout=10,
            socket_connect_timeout=5,
        )
    return broker.with_middlewares(JobLoggingMiddleware())

"""The taskiq broker, from settings. Never imports the web app."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from redis.asyncio import Connection, Redis
from taskiq import AsyncBroker, BrokerMessage, InMemoryBroker, TaskiqMessage, TaskiqMiddleware, TaskiqResult
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


class CancellableConnection(Connection):
    """A Redis connection whose writes never swallow a cancellation (Python 3.11 only).

    redis-py writes through `asyncio.wait_for`, which on Python 3.11 returns the write's result
    instead of raising when the cancellation arrives as the write completes (fixed in 3.12). The
    worker's listener was cancelled that way at shutdown one time in about forty, kept reading the
    stream, and the worker process never exited. On later versions the check finds nothing.
    """

    async def send_packed_command(self, command: bytes | str | Iterable[bytes], check_health: bool = True) -> None:
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        await super().send_packed_command(command, check_health)
        if task is not None and task.cancelling() > cancelling:
            raise asyncio.CancelledError


class StreamBroker(RedisStreamBroker):
    """taskiq-redis's stream broker, sending and acknowledging through one Redis client.

    The parent builds a `Redis` client over its pool for every message sent and every message
    acknowledged: the construction alone was 11 % of a task submission's CPU.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: Redis | None = None

    @property
    def client(self) -> Redis:
        if self._client is None:
            self._client = Redis(connection_pool=self.connection_pool)
        return self._client

    async def kick(self, message: BrokerMessage) -> None:
        queue_name = message.labels.get("queue_name") or self.queue_name
        await self.client.xadd(queue_name, {b"data": message.message}, maxlen=self.maxlen, approximate=self.approximate)

    def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
        async def acknowledge() -> None:
            await self.client.xack(queue_name, self.consumer_group_name, id)

        return acknowledge

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose(close_connection_pool=False)  # the parent disconnects the pool
            self._client = None
        await super().shutdown()


def build_broker(settings: Settings) -> AsyncBroker:
    if settings.redis.url is None:
        broker: AsyncBroker = InMemoryBroker()
    else:
        namespace = settings.redis.namespace
        broker = StreamBroker(
            url=settings.redis.url,
            queue_name=f"{namespace}:jobs",
            consumer_group_name=f"{namespace}:workers",
            xread_block=1000,
            # Messages a killed worker never acknowledged are reclaimed after this long. The
            # database lease and the sweep are what bring a task back quickly; this is a backstop.
            idle_timeout=300_000,
            unacknowledged_lock_timeout=10,
            socket_connect_timeout=5,
            # One message per read: a worker takes a job only when it has room to start it, so jobs
            # spread over the workers, and a stopping worker holds no fetched job it never started.
            xread_count=1,
            connection_class=CancellableConnection,
        )
    return broker.with_middlewares(JobLoggingMiddleware())

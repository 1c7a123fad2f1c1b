"""The taskiq broker, from settings. Never imports the web app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any

import structlog
from redis.asyncio import Connection, Redis
from taskiq import (
    AckableMessage,
    AsyncBroker,
    BrokerMessage,
    InMemoryBroker,
    TaskiqMessage,
    TaskiqMiddleware,
    TaskiqResult,
)
from taskiq_redis import RedisStreamBroker

from app.config import Settings

logger = structlog.get_logger("app.worker")

# How often a listening worker looks for messages a dead worker never acknowledged (XAUTOCLAIM of
# those idle longer than `idle_timeout`, 300 s): a backstop, so every few seconds is plenty.
AUTOCLAIM_EVERY_SECONDS = 5.0


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

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """The parent's loop, with its look for unacknowledged messages every few seconds instead of
        after every read: that look (a lock taken and released, XAUTOCLAIM; four round trips) came
        after each job read one by one, more Redis traffic than the job's own. It now also runs while
        the queue is idle (the parent's skipped it until a message came)."""
        streams = [self.queue_name, *self.additional_streams]
        next_autoclaim = 0.0
        async with Redis(connection_pool=self.connection_pool) as connection:
            while True:
                fetched: Any = await connection.xreadgroup(
                    self.consumer_group_name,
                    self.consumer_name,
                    {self.queue_name: ">", **self.additional_streams},  # type: ignore[dict-item]
                    block=self.block,
                    noack=False,
                    count=self.count,
                )
                read: list[tuple[str, list[tuple[str, dict[bytes, bytes]]]]] = fetched or []
                for stream, messages in read:
                    for message_id, message in messages:
                        yield AckableMessage(data=message[b"data"], ack=self._ack_generator(message_id, stream))
                if time.monotonic() < next_autoclaim:
                    continue
                next_autoclaim = time.monotonic() + AUTOCLAIM_EVERY_SECONDS
                for stream in streams:
                    async for reclaimed in self._autoclaimed(connection, stream):
                        yield reclaimed

    async def _autoclaimed(self, connection: Redis, stream: str) -> AsyncGenerator[AckableMessage, None]:
        """Messages of `stream` idle longer than `idle_timeout`, claimed for this consumer (as the parent)."""
        pipe = connection.pipeline()
        lock = pipe.lock(f"autoclaim:{self.consumer_group_name}:{stream}", timeout=self.unacknowledged_lock_timeout)
        await lock.acquire()
        await pipe.xautoclaim(
            name=stream,
            groupname=self.consumer_group_name,
            consumername=self.consumer_name,
            min_idle_time=self.idle_timeout,
            count=self.unacknowledged_batch_size,
        )
        await lock.release()
        results = await pipe.execute()
        for message_id, message in results[1][1]:
            yield AckableMessage(data=message[b"data"], ack=self._ack_generator(message_id, stream))

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

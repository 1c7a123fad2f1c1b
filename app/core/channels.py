"""The channel backend and the publisher, used by the web process and the worker alike.

The wire format of a published event is defined here once. The backend only carries live
events; the event table is the history.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable
from typing import Any, Protocol
from uuid import UUID

import structlog
from litestar.channels import ChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.config import RedisSettings

GLOBAL_CHANNEL = "all"
# Most events a publisher sends in one round trip (what queued up while the last batch was sent).
PUBLISH_BATCH = 100
# Where a session keeps the publisher of its committed events (`app.events.outbox` reads it).
PUBLISHER_KEY = "botarmy.publisher"
logger = structlog.get_logger(__name__)


def event_channels(project_id: UUID | None) -> list[str]:
    """Where an event is published: the one channel that every api process reads (`app.events.hub`
    puts it in id order and hands it to the streams of its project)."""
    del project_id
    return [GLOBAL_CHANNEL]


class ResilientRedisPubSubBackend(RedisChannelsPubSubBackend):
    """Redis pub/sub that outlives a Redis outage.

    Litestar's ChannelsPlugin reads `stream_events` in one task; if the generator raises (Redis
    went away) that task dies and no subscriber of the process hears anything again. Here a
    connection error is waited out instead: redis-py's PubSub reconnects on the next read and
    subscribes again to every channel it had.

    Its channels are named under the key prefix (the deployment's namespace): Litestar's pub/sub
    backend uses the names as they are, so deployments (and test runs) sharing a Redis would
    otherwise hear each other's events, with ids that mean something else in their database.
    """

    RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0)

    def _named(self, channels: Iterable[str]) -> list[str]:
        return [f"{self._key_prefix}:{channel}" for channel in channels]

    async def subscribe(self, channels: Iterable[str]) -> None:
        await super().subscribe(self._named(channels))

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        await super().unsubscribe(self._named(channels))

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        await super().publish(data, self._named(channels))

    async def publish_many(self, messages: Iterable[tuple[bytes, Iterable[str]]]) -> None:
        """Publish each message to its channels, in order, in one round trip: a pipeline of PUBLISH
        commands, which Redis runs one after the other (the parent runs a script per message)."""
        pipe = self._redis.pipeline(transaction=False)
        for data, channels in messages:
            for channel in dict.fromkeys(self._named(channels)):
                pipe.publish(channel, data)
        await pipe.execute()

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        failures = 0
        prefix = f"{self._key_prefix}:"
        while True:
            try:
                async for channel, data in super().stream_events():
                    failures = 0
                    yield channel.removeprefix(prefix), data
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                delay = self.RETRY_SECONDS[min(failures, len(self.RETRY_SECONDS) - 1)]
                if failures == 0:
                    logger.warning("channels_connection_lost", error=type(exc).__name__)
                failures += 1
                await asyncio.sleep(delay)


def build_channels_backend(settings: RedisSettings) -> ChannelsBackend:
    if settings.url is None:
        return MemoryChannelsBackend()
    # Pub/sub, not streams: the event table is the replay source, so the backend keeps no history.
    return ResilientRedisPubSubBackend(
        redis=Redis.from_url(settings.url, socket_connect_timeout=5),
        key_prefix=f"{settings.namespace}:channels",
        stream_sleep_no_subscriptions=50,
    )


class EventPublisher(Protocol):
    def publish(self, data: bytes, channels: Iterable[str]) -> None:
        """Schedule `data` for `channels`; calls are delivered in the order they were made."""


class BackendPublisher:
    """Publishes to a channels backend from a queue of its own, in order, surviving failures.

    Used by the api and the worker alike. Not `ChannelsPlugin.publish`: the plugin's publishing
    task dies on the first failed publish (Redis away), after which nothing is published and
    the app's shutdown waits forever on the plugin's queue. A lost live event is recoverable
    from the event table, so a failure is logged and the next event is tried.
    """

    def __init__(self, backend: ChannelsBackend, *, owns_backend: bool = True, drain_seconds: float = 5.0) -> None:
        self._backend = backend
        # The api's backend is started and stopped by its ChannelsPlugin; the worker's by us.
        self._owns_backend = owns_backend
        self._drain_seconds = drain_seconds
        self._queue: asyncio.Queue[tuple[bytes, list[str]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._owns_backend:
            await self._backend.on_startup()
        self._task = asyncio.create_task(self._drain())

    async def stop(self) -> None:
        # Deliver what is queued, but never hang a shutdown on an unreachable backend.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self._drain_seconds)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._owns_backend:
            await self._backend.on_shutdown()

    def publish(self, data: bytes, channels: Iterable[str]) -> None:
        self._queue.put_nowait((data, list(channels)))

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < PUBLISH_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._send(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _send(self, batch: list[tuple[bytes, list[str]]]) -> None:
        """What queued up, in one round trip where the backend can (Redis); a failure loses these live
        events only."""
        if isinstance(self._backend, ResilientRedisPubSubBackend):
            try:
                await self._backend.publish_many(batch)
            except Exception as exc:  # noqa: BLE001 - a lost live event is recoverable from the event table
                logger.warning("publish_failed", events=len(batch), error=type(exc).__name__)
            return
        for data, channels in batch:
            try:
                await self._backend.publish(data, channels)
            except Exception as exc:  # noqa: BLE001 - a lost live event is recoverable from the event table
                logger.warning("publish_failed", channels=channels, error=type(exc).__name__)


def session_info(publisher: EventPublisher | None) -> dict[str, Any]:
    """The `info` a sessionmaker needs for its sessions to publish their events."""
    return {PUBLISHER_KEY: publisher} if publisher is not None else {}

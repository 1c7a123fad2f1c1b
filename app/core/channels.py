"""The channel backend and the publisher, used by the web process and the worker alike.

The wire format of a published event is defined here once. The backend only carries live
events; the event table is the history.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Protocol
from uuid import UUID

import structlog
from litestar.channels import ChannelsBackend, ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio import Redis

from app.config import RedisSettings

GLOBAL_CHANNEL = "all"
logger = structlog.get_logger(__name__)


def project_channel(project_id: UUID | str) -> str:
    return f"project:{project_id}"


def event_channels(project_id: UUID | None) -> list[str]:
    return [project_channel(project_id), GLOBAL_CHANNEL] if project_id is not None else [GLOBAL_CHANNEL]


def build_channels_backend(settings: RedisSettings) -> ChannelsBackend:
    if settings.url is None:
        return MemoryChannelsBackend()
    # Pub/sub, not streams: the event table is the replay source, so the backend keeps no history.
    return RedisChannelsPubSubBackend(
        redis=Redis.from_url(settings.url, socket_connect_timeout=5),
        key_prefix=f"{settings.namespace}:channels",
        stream_sleep_no_subscriptions=50,
    )


class EventPublisher(Protocol):
    def publish(self, data: bytes, channels: Iterable[str]) -> None:
        """Schedule `data` for `channels`; calls are delivered in the order they were made."""


class ChannelsPluginPublisher:
    """Publishes through the app's ChannelsPlugin (its own queue keeps the order)."""

    def __init__(self, plugin: ChannelsPlugin) -> None:
        self._plugin = plugin

    def publish(self, data: bytes, channels: Iterable[str]) -> None:
        self._plugin.publish(data, list(channels))


class BackendPublisher:
    """Publishes straight to a backend, for processes without a Litestar app (the worker)."""

    def __init__(self, backend: ChannelsBackend) -> None:
        self._backend = backend
        self._queue: asyncio.Queue[tuple[bytes, list[str]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._backend.on_startup()
        self._task = asyncio.create_task(self._drain())

    async def stop(self) -> None:
        await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._backend.on_shutdown()

    def publish(self, data: bytes, channels: Iterable[str]) -> None:
        self._queue.put_nowait((data, list(channels)))

    async def _drain(self) -> None:
        while True:
            data, channels = await self._queue.get()
            try:
                await self._backend.publish(data, channels)
            except Exception:  # a lost live event is recoverable from the event table
                logger.warning("publish_failed", channels=channels, exc_info=True)
            finally:
                self._queue.task_done()

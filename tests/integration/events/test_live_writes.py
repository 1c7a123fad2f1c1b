"""Live events written in the hub's own pass (`Feed.open(send=...)`, `app.events.eager.start_now`):
in order, exactly once, and a client whose writes wait never holds up the others."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.types import WebSocketSendEvent

from app.core.channels import GLOBAL_CHANNEL
from app.events.eager import start_now
from app.events.hub import LiveHub
from app.events.streams import Feed, FeedItem, FeedOverflowError, Filters
from tests.helpers import eventually, migrated_database


async def test_start_now_runs_a_coroutine_to_its_end_on_the_callers_stack() -> None:
    ran: list[str] = []

    async def write() -> None:
        ran.append("written")

    assert start_now(write()) is None
    assert ran == ["written"]  # before start_now returned: no task, no turn of the loop


async def test_start_now_hands_a_coroutine_that_waits_to_a_task_that_finishes_it() -> None:
    writable = asyncio.Event()
    ran: list[str] = []

    async def write() -> None:
        ran.append("started")
        await writable.wait()
        ran.append("written")

    pending = start_now(write())
    assert pending is not None
    assert ran == ["started"]
    await asyncio.sleep(0.01)
    assert ran == ["started"] and not pending.done()
    writable.set()
    await asyncio.wait_for(pending, 5)
    assert ran == ["started", "written"]


async def test_start_now_raises_what_the_coroutine_raises_before_it_waits_and_keeps_what_it_raises_after() -> None:
    async def gone() -> None:
        raise ConnectionResetError("client gone")

    with pytest.raises(ConnectionResetError, match="client gone"):
        start_now(gone())

    writable = asyncio.Event()

    async def gone_later() -> None:
        await writable.wait()
        raise ConnectionResetError("gone while waiting")

    pending = start_now(gone_later())
    assert pending is not None
    writable.set()
    with pytest.raises(ConnectionResetError, match="gone while waiting"):
        await asyncio.wait_for(pending, 5)


async def test_cancelling_the_task_of_start_now_cancels_the_coroutine_where_it_waits() -> None:
    writable = asyncio.Event()
    seen: list[str] = []

    async def write() -> None:
        try:
            await writable.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    pending = start_now(write())
    assert pending is not None
    await asyncio.sleep(0)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert seen == ["cancelled"]


class Transport:
    """An ASGI send as a server's is: it writes at once, or waits while the client's socket is backed up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.writable = asyncio.Event()
        self.writable.set()
        self.ids: list[int] = []
        self.gone = False

    async def send(self, message: WebSocketSendEvent) -> None:
        await self.writable.wait()
        if self.gone:
            raise ConnectionResetError(f"{self.name}: the client is gone")
        text = message["text"]
        assert text is not None
        self.ids.append(json.loads(text)["id"])


async def write_yielded(items: AsyncIterator[Any], transport: Transport, yielded: list[int]) -> None:
    """What the WebSocket handler does with what a feed yields: write it, in order."""
    async for item in items:
        if isinstance(item, FeedItem):
            assert item.id is not None
            yielded.append(item.id)
            await transport.send(item.asgi_message())


def publish(channels: ChannelsPlugin, first: int, last: int) -> None:
    for n in range(first, last + 1):
        channels.publish(json.dumps({"id": n, "event_type": "x", "data": {}}).encode(), [GLOBAL_CHANNEL])


async def until(condition: Callable[[], bool]) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check, bool, timeout=5, interval=0.005)


async def test_live_events_are_written_in_the_hubs_pass_and_a_backed_up_client_gets_everything_in_order(
    embedded_env: dict[str, str],
) -> None:
    database = await migrated_database(embedded_env)
    channels = ChannelsPlugin(backend=MemoryChannelsBackend(), arbitrary_channels_allowed=True)
    slow, fast = Transport("slow"), Transport("fast")
    slow_yielded: list[int] = []
    fast_yielded: list[int] = []
    try:
        async with channels, contextlib.AsyncExitStack() as stack:
            hub = LiveHub(channels, database.get_session)
            feeds = {
                name: Feed(database.get_session, None, Filters(), max_backlog=50, heartbeat_seconds=10)
                for name in ("slow", "fast")
            }
            slow_items = await stack.enter_async_context(feeds["slow"].open(hub, None, send=slow.send))
            fast_items = await stack.enter_async_context(feeds["fast"].open(hub, None, send=fast.send))
            writers = [
                asyncio.create_task(write_yielded(slow_items, slow, slow_yielded)),
                asyncio.create_task(write_yielded(fast_items, fast, fast_yielded)),
            ]
            await until(lambda: all(feed.sink.direct is not None for feed in feeds.values()))

            publish(channels, 1, 5)
            await until(lambda: len(fast.ids) == 5 and len(slow.ids) == 5)
            assert fast_yielded == slow_yielded == []  # written by the hub's pass, never through the iteration

            slow.writable.clear()  # the slow client stops reading: its next write waits
            publish(channels, 6, 30)
            await until(lambda: len(fast.ids) == 30)
            assert fast.ids == list(range(1, 31)) and fast_yielded == []  # never held up by the slow one
            assert slow.ids == list(range(1, 6))
            assert len(feeds["slow"].sink.events) == 24  # 7..30 wait behind 6, whose write is under way

            slow.writable.set()
            await until(lambda: len(slow.ids) == 30)
            assert slow.ids == list(range(1, 31))  # in order, once each
            assert slow_yielded == list(range(7, 31))  # what waited went out through the iteration
            await until(lambda: feeds["slow"].sink.direct is not None)  # then the hub writes again

            publish(channels, 31, 33)
            await until(lambda: len(slow.ids) == 33 and len(fast.ids) == 33)
            assert slow.ids == fast.ids == list(range(1, 34))
            assert slow_yielded == list(range(7, 31))
            assert feeds["slow"].written_id == 33  # the resume point follows the writes
            assert feeds["slow"].last_id == feeds["fast"].last_id == 33
            for writer in writers:
                writer.cancel()
    finally:
        await database.get_engine().dispose()


async def test_a_backed_up_client_is_cut_off_and_one_that_is_gone_ends_its_feed(embedded_env: dict[str, str]) -> None:
    database = await migrated_database(embedded_env)
    channels = ChannelsPlugin(backend=MemoryChannelsBackend(), arbitrary_channels_allowed=True)
    stuck, gone = Transport("stuck"), Transport("gone")
    try:
        async with channels, contextlib.AsyncExitStack() as stack:
            hub = LiveHub(channels, database.get_session)
            stuck_feed = Feed(database.get_session, None, Filters(), max_backlog=5, heartbeat_seconds=10)
            gone_feed = Feed(database.get_session, None, Filters(), max_backlog=5, heartbeat_seconds=10)
            stuck_items = await stack.enter_async_context(stuck_feed.open(hub, None, send=stuck.send))
            gone_items = await stack.enter_async_context(gone_feed.open(hub, None, send=gone.send))
            stuck_writer = asyncio.create_task(write_yielded(stuck_items, stuck, []))
            gone_writer = asyncio.create_task(write_yielded(gone_items, gone, []))
            await until(lambda: stuck_feed.sink.direct is not None and gone_feed.sink.direct is not None)

            stuck.writable.clear()
            gone.gone = True
            publish(channels, 1, 10)
            # 1 is under way, 2..6 fill the buffer of 5, 7 overflows it: the client must reconnect.
            await until(lambda: stuck_feed.sink.cut_off.is_set())
            with pytest.raises(FeedOverflowError):
                await asyncio.wait_for(stuck_writer, 5)
            with pytest.raises(ConnectionResetError, match="gone: the client is gone"):
                await asyncio.wait_for(gone_writer, 5)
            assert stuck.ids == gone.ids == []
    finally:
        await database.get_engine().dispose()


async def test_the_heartbeat_counts_the_hubs_writes_and_comes_once_the_stream_is_idle(
    embedded_env: dict[str, str],
) -> None:
    database = await migrated_database(embedded_env)
    channels = ChannelsPlugin(backend=MemoryChannelsBackend(), arbitrary_channels_allowed=True)
    transport = Transport("client")
    heartbeats: list[float] = []
    try:
        async with channels, contextlib.AsyncExitStack() as stack:
            hub = LiveHub(channels, database.get_session)
            feed = Feed(database.get_session, None, Filters(), max_backlog=50, heartbeat_seconds=0.3)
            items = await stack.enter_async_context(feed.open(hub, None, send=transport.send))
            loop = asyncio.get_running_loop()

            async def read() -> None:
                async for item in items:
                    if not isinstance(item, FeedItem):
                        heartbeats.append(loop.time())

            reader = asyncio.create_task(read())
            await until(lambda: feed.sink.direct is not None)
            started = loop.time()
            for n in range(1, 13):  # an event every 0.1 s for 1.2 s: never idle for 0.3 s
                publish(channels, n, n)
                await asyncio.sleep(0.1)
            busy_until = loop.time()
            assert transport.ids == list(range(1, 13))
            assert [at for at in heartbeats if at < busy_until] == [], heartbeats
            await until(lambda: bool(heartbeats))  # idle now: the heartbeat comes
            assert 0.25 <= heartbeats[0] - busy_until + 0.1 <= 1.0, (heartbeats[0] - started, busy_until - started)
            assert feed.last_id == 12
            reader.cancel()
    finally:
        await database.get_engine().dispose()

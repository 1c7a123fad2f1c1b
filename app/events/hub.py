"""Live events of one api process, read once per channel and handed to every local feed.

One event on a busy project reaches hundreds of sockets of this process. Litestar's ChannelsPlugin
gives every subscriber its own queue; with a subscriber per socket, each event was queued, pumped,
decoded and awaited once per socket (bench/README.md, `ws_bench`). Here the process subscribes once
per channel, decodes each event once, and appends it to each interested feed's bounded buffer: a
`deque` and, only if that feed is waiting, one wake-up.

A buffer that would grow past its bound is marked overflowed instead (its feed tells the client to
reconnect with `after`): a slow client never holds up the others or the process's memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import msgspec
import structlog
from litestar.channels import ChannelsPlugin, Subscriber
from litestar.types import WebSocketSendEvent

logger = structlog.get_logger(__name__)


# Where the app (`app.main.BotArmy`) keeps a WebSocket's server-side ASGI send in its scope.
SERVER_SEND_KEY = "botarmy.server_send"


class LiveEvent(msgspec.Struct, frozen=True, gc=False):  # strings, ints and a dict of strings: no cycles
    """An event as it came over a channel, decoded once for every feed of the process."""

    id: int | None  # None: a live-only message (model output as it streams)
    event_type: str
    agent_type: str | None
    text: str  # the JSON message, sent as it is
    # The ASGI message that sends it, built once and shared by every socket: nothing on the way mutates it.
    message: WebSocketSendEvent
    received_at: float  # the event loop's clock when this process read it


class _Envelope(msgspec.Struct):
    id: int | None
    event_type: str
    data: dict[str, Any] = {}


_decoder = msgspec.json.Decoder(_Envelope)


def decode_live(payload: bytes, received_at: float) -> LiveEvent | None:
    """The event of a channel message, or None (logged) for a message that is not one."""
    try:
        envelope = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        logger.warning("live_event_undecodable", error=str(exc)[:200])
        return None
    agent_type = envelope.data.get("agent_type")
    text = payload.decode()
    return LiveEvent(
        envelope.id,
        envelope.event_type,
        agent_type if isinstance(agent_type, str) else None,
        text,
        {"type": "websocket.send", "bytes": None, "text": text},
        received_at,
    )


class Sink:
    """One feed's buffer of live events. `offer` is called by the hub; the feed waits with `wait`.

    While its feed has nothing else to send, it may set `direct`: the hub then hands it each event
    at once, and the feed writes it to its client in the hub's own pass, with no wake-up.
    """

    __slots__ = (
        "_waiter",
        "accepts",
        "cut_off",
        "direct",
        "events",
        "first_id",
        "max_backlog",
        "overflowed",
        "woken",
    )

    def __init__(self, accepts: Callable[[LiveEvent], bool], max_backlog: int) -> None:
        """`accepts(event)` chooses the events this feed wants (its filters)."""
        self.accepts = accepts
        self.max_backlog = max_backlog
        # Set on overflow: the transport may be stuck sending to this client and must not wait for the feed.
        self.cut_off = asyncio.Event()
        self.events: collections.deque[LiveEvent] = collections.deque()
        self.overflowed = False
        self.first_id: int | None = None  # of the first stored event offered: where this live feed began
        self.woken = False  # set by `wake`: the feed has something else to do (a timer fired)
        # Takes an event instead of the buffer, while the buffer is empty; it must not raise.
        self.direct: Callable[[LiveEvent], None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, event: LiveEvent) -> None:
        if self.overflowed or not self.accepts(event):
            return
        if self.first_id is None and event.id is not None:
            self.first_id = event.id
        if self.direct is not None and not self.events:
            self.direct(event)
            return
        if len(self.events) >= self.max_backlog:
            self.overflowed = True
            self.events.clear()  # nothing more is sent to this client: free its buffer now
            self.cut_off.set()
        else:
            self.events.append(event)
        self._wake_waiter()

    def wake(self) -> None:
        self.woken = True
        self._wake_waiter()

    def _wake_waiter(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Until there is an event, an overflow or a `wake`: at once if there already is one."""
        if self.events or self.overflowed or self.woken:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class _Reader:
    def __init__(self, subscriber: Subscriber, task: asyncio.Task[None]) -> None:
        self.subscriber = subscriber
        self.task = task


class LiveHub:
    """The process's channel subscriptions, one per channel with local feeds, shared by those feeds."""

    def __init__(self, channels: ChannelsPlugin) -> None:
        self.channels = channels
        self._sinks: dict[str, set[Sink]] = {}
        self._readers: dict[str, _Reader] = {}
        self._lock = asyncio.Lock()  # subscribing and unsubscribing a channel await the backend

    @contextlib.asynccontextmanager
    async def attach(self, sink: Sink, names: Iterable[str]) -> AsyncIterator[None]:
        """`sink` gets the events of `names` from when this is entered (the backend subscribed) until it exits."""
        names = list(dict.fromkeys(names))
        async with self._lock:
            try:
                for name in names:
                    await self._add(name, sink)
            except BaseException:
                await self._remove_all(names, sink)
                raise
        try:
            yield
        finally:
            async with self._lock:
                await self._remove_all(names, sink)

    async def _add(self, name: str, sink: Sink) -> None:
        sinks = self._sinks.setdefault(name, set())
        sinks.add(sink)
        if name not in self._readers:
            subscriber = await self.channels.subscribe([name])
            self._readers[name] = _Reader(subscriber, asyncio.create_task(self._read(name, subscriber)))

    async def _remove_all(self, names: list[str], sink: Sink) -> None:
        for name in names:
            sinks = self._sinks.get(name)
            if sinks is None:
                continue
            sinks.discard(sink)
            if sinks:
                continue
            del self._sinks[name]
            reader = self._readers.pop(name, None)
            if reader is not None:
                reader.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader.task
                await self.channels.unsubscribe(reader.subscriber, [name])

    async def _read(self, name: str, subscriber: Subscriber) -> None:
        loop = asyncio.get_running_loop()
        async for payload in subscriber.iter_events():
            event = decode_live(payload, loop.time())
            if event is None:
                continue
            for sink in tuple(self._sinks.get(name, ())):
                sink.offer(event)

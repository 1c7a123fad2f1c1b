"""One feed of events for a client: replay from the event table, then live, with no gap and no duplicate.

The event table is the history; the channel backend only carries live events. A feed subscribes
to its channels *first*, buffering live events, then reads the table for everything after the
client's last id, then hands over to the buffered and later live events, skipping any it already
replayed. Because commits do not finish in id order (and a Redis subscription takes a moment to
take effect), it reads the table once more a second after the hand-over, for events committed in
between that the subscription did not see.

The buffer is bounded: a client too slow to keep up is told to reconnect with `after` instead of
slowing the others or growing the server's memory. When nothing happens for a while the feed
yields a heartbeat, which also finds connections that died without closing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

import msgspec
from litestar.types import WebSocketSendEvent
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.events.eager import start_now
from app.events.hub import LiveEvent, LiveHub, Sink
from app.events.models import Event
from app.events.outbox import encode_event

REPLAY_BATCH = 500
CATCH_UP_AFTER_SECONDS = 1.0
# Replayed ids kept to drop their live copies; commits are never this many events out of order.
DEDUPE_WINDOW = 10_000
MAX_LAST = 1000
WRITTEN_WINDOW = 64  # ids remembered per feed for its resume point; commits are never this far out of order


class FeedOverflowError(Exception):
    """The client fell further behind than the buffer allows; it must reconnect with `after`."""


class Filters(msgspec.Struct, frozen=True):
    event_types: frozenset[str] | None = None
    agent_types: frozenset[str] | None = None

    def accepts(self, event_type: str, data: dict[str, Any]) -> bool:
        if self.event_types is not None and event_type not in self.event_types:
            return False
        return self.agent_types is None or data.get("agent_type") in self.agent_types

    def accepts_live(self, event: LiveEvent) -> bool:
        if self.event_types is not None and event.event_type not in self.event_types:
            return False
        return self.agent_types is None or event.agent_type in self.agent_types


class Heartbeat(msgspec.Struct, frozen=True):
    """Yielded when nothing happened for a while: the transport sends a keep-alive."""


class FeedItem(msgspec.Struct, frozen=True, gc=False):  # strings, ints and a dict of strings: no cycles
    id: int | None  # None: a live-only message
    event_type: str
    text: str  # the JSON message
    message: WebSocketSendEvent | None = None  # a live event's shared ASGI message (LiveEvent.message)

    def asgi_message(self) -> WebSocketSendEvent:
        """The ASGI message that sends this item on a WebSocket."""
        return self.message or {"type": "websocket.send", "bytes": None, "text": self.text}


def parse_list(raw: str | None, allowed: Iterable[str] | None = None, *, name: str) -> frozenset[str] | None:
    """`a,b` into a set; unknown values (when `allowed` is given) raise ValueError naming them."""
    if raw is None or not raw.strip():
        return None
    values = frozenset(part.strip() for part in raw.split(",") if part.strip())
    if allowed is not None and (unknown := values - set(allowed)):
        msg = f"{name}: unknown value(s) {', '.join(sorted(unknown))}"
        raise ValueError(msg)
    return values


class Feed:
    def __init__(
        self,
        sessions: Callable[[], contextlib.AbstractAsyncContextManager[AsyncSession]],
        scope: Sequence[UUID] | None,
        filters: Filters,
        *,
        max_backlog: int,
        heartbeat_seconds: float,
    ) -> None:
        """`sessions` opens a database session; `scope`: the projects whose events the feed carries
        (None: every event)."""
        self.sessions = sessions
        self.scope = list(scope) if scope is not None else None
        self.filters = filters
        self.heartbeat_seconds = heartbeat_seconds
        self.last_id: int | None = None  # of the last event handed to the client
        # The last ids the transport wrote: live events arrive in commit order, which is not always id order.
        self.written: collections.deque[int] = collections.deque(maxlen=WRITTEN_WINDOW)
        self.sink = Sink(filters.accepts_live, max_backlog)
        # Ids already sent by the replay or the catch-up, whose live copies are dropped.
        self._seen: set[int] = set()
        self._recent: collections.deque[int] = collections.deque(maxlen=DEDUPE_WINDOW)
        self._active_at = 0.0  # the loop's clock when the client was last sent something
        # Writing live events in the hub's pass (see `open`): the transport's ASGI send, the one
        # write still under way (its client is backed up), and the error that ended writing.
        self._send: Callable[[WebSocketSendEvent], Awaitable[None]] | None = None
        self._in_flight: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None

    def _where(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.scope is not None:
            conditions.append(Event.project_id.in_(self.scope))
        if self.filters.event_types is not None:
            conditions.append(Event.event_type.in_(self.filters.event_types))
        return conditions

    def wrote(self, item: FeedItem) -> None:
        """The transport wrote `item` to the client."""
        if item.id is not None:
            self.written.append(item.id)

    async def resume_point(self) -> int:
        """An id to reconnect `after` with that loses nothing: every event of this feed up to it was written.

        Not simply the last id written: an event with a smaller id may have committed (and been sent)
        later, or not yet.
        """
        if not self.written:
            first = self.sink.first_id
            return (first - 1) if first is not None else (self.last_id or 0)
        written = set(self.written)
        low, high = min(written), max(written)
        async with self.sessions() as session:
            rows = await session.execute(
                select(Event.id, Event.event_type, Event.data)
                .where(Event.id >= low, Event.id <= high, *self._where())
                .order_by(Event.id)
            )
            for event_id, event_type, data in rows:
                if event_id not in written and self.filters.accepts(event_type, data):
                    return int(event_id) - 1
        return high

    async def start_after_last(self, last: int) -> int:
        """The id to replay after so that the client gets the last `last` events (of its filters)."""
        async with self.sessions() as session:
            statement = select(Event.id).where(*self._where()).order_by(Event.id.desc()).limit(min(last, MAX_LAST))
            ids = list(await session.scalars(statement))
        return (min(ids) - 1) if ids else 0

    async def _history(self, session: AsyncSession, after: int) -> AsyncIterator[Event]:
        while True:
            statement = select(Event).where(Event.id > after, *self._where()).order_by(Event.id).limit(REPLAY_BATCH)
            batch = list(await session.scalars(statement))
            for event in batch:
                yield event
            if len(batch) < REPLAY_BATCH:
                return
            after = batch[-1].id
            session.expunge_all()  # a long replay holds one batch at a time

    @contextlib.asynccontextmanager
    async def open(
        self,
        hub: LiveHub,
        names: list[str],
        after: int | None,
        send: Callable[[WebSocketSendEvent], Awaitable[None]] | None = None,
    ) -> AsyncIterator[AsyncIterator[FeedItem | Heartbeat]]:
        """Subscribe, then iterate: the replay after `after` (None: live only), then live events.

        With `send` (a WebSocket's ASGI send), live events that find the feed idle are not yielded:
        they are written by the hub's pass over its feeds, one after the other, each a few microseconds
        when the client keeps up. What the iteration yields (the replay, heartbeats, events that arrive
        while a write to a backed-up client is still under way) the caller writes itself, as before.
        """
        self._send = send
        async with hub.attach(self.sink, names):
            yield self._items(self.sink, after)

    def _remember(self, event_id: int) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._seen.discard(self._recent[0])
        self._recent.append(event_id)
        self._seen.add(event_id)

    def _write_now(self, event: LiveEvent) -> None:
        """`Sink.direct`: write a live event to the client now, in the hub's pass. Never raises."""
        if event.id is not None:
            if event.id in self._seen:
                return
            if self.last_id is None or event.id > self.last_id:
                self.last_id = event.id
        self._active_at = event.received_at
        send = self._send
        if send is None:  # never set as `direct` without a send
            return
        try:
            pending = start_now(send(event.message))
        except Exception as exc:  # noqa: BLE001 - whatever it is ends this feed, never the hub's pass
            self._stop_writing(exc)
            return
        if pending is None:
            if event.id is not None:
                self.written.append(event.id)
            return
        # The client's transport is backed up: later events wait in the buffer (bounded) until this is out.
        self.sink.direct = None
        self._in_flight = pending
        pending.add_done_callback(lambda task: self._written_later(task, event.id))

    def _written_later(self, task: asyncio.Future[None], event_id: int | None) -> None:
        self._in_flight = None
        if task.cancelled():
            self._stop_writing(ConnectionError("the write to the client was cancelled"))
            return
        if (exc := task.exception()) is not None:
            self._stop_writing(exc)
            return
        if event_id is not None:
            self.written.append(event_id)
        self.sink.wake()  # the feed sends what waited meanwhile, then hands back to the hub

    def _stop_writing(self, exc: BaseException) -> None:
        self._failure = exc
        self.sink.direct = None
        self.sink.wake()

    async def _items(self, sink: Sink, after: int | None) -> AsyncIterator[FeedItem | Heartbeat]:
        loop = asyncio.get_running_loop()
        catch_up_at: float | None = None
        if after is not None:
            async with self.sessions() as session:
                async for event in self._history(session, after):
                    if sink.overflowed:
                        raise FeedOverflowError
                    if self.filters.accepts(event.event_type, event.data):
                        self._remember(event.id)
                        self.last_id = event.id
                        yield FeedItem(event.id, event.event_type, encode_event(event).decode())
            catch_up_at = loop.time() + CATCH_UP_AFTER_SECONDS
        # One timer at a time wakes the feed for its next deadline (catch-up, heartbeat), not one per event.
        self._active_at = loop.time()
        timer: asyncio.TimerHandle | None = None
        try:
            while True:
                sink.direct = None  # what is sent now, this iteration sends, in order
                if self._failure is not None:
                    raise self._failure
                if sink.overflowed:
                    raise FeedOverflowError
                if self._in_flight is not None:
                    # The hub's last write goes out before anything else, unless the client is cut off meanwhile.
                    overflow: asyncio.Future[Any] = asyncio.ensure_future(sink.cut_off.wait())
                    in_flight: asyncio.Future[Any] = self._in_flight
                    try:
                        await asyncio.wait([in_flight, overflow], return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        overflow.cancel()
                    continue
                if sink.events:
                    live = sink.events.popleft()
                    self._active_at = loop.time()
                    if live.id is None:  # live only (model output as it streams): never replayed or deduplicated
                        yield FeedItem(None, live.event_type, live.text, live.message)
                        continue
                    if live.id in self._seen:
                        continue
                    if catch_up_at is not None:
                        self._remember(live.id)
                    self.last_id = max(self.last_id or 0, live.id)
                    yield FeedItem(live.id, live.event_type, live.text, live.message)
                    continue
                now = loop.time()
                if catch_up_at is not None and now >= catch_up_at:
                    catch_up_at = None
                    # Late commits have ids near the hand-over: look from the oldest id still remembered.
                    since = max(after or 0, (self._recent[0] - 1) if self._recent else 0)
                    async for item in self._catch_up(since):
                        self._active_at = loop.time()
                        yield item
                    continue
                if now >= self._active_at + self.heartbeat_seconds:
                    self._active_at = now
                    yield Heartbeat()
                    continue
                if timer is None or sink.woken:
                    if timer is not None:
                        timer.cancel()
                    deadline = self._active_at + self.heartbeat_seconds
                    if catch_up_at is not None:
                        deadline = min(deadline, catch_up_at)
                    sink.woken = False
                    timer = loop.call_at(deadline, sink.wake)
                if self._send is not None and catch_up_at is None:
                    sink.direct = self._write_now  # idle and past the hand-over: the hub writes live events
                await sink.wait()
        finally:
            sink.direct = None
            if timer is not None:
                timer.cancel()
            if self._in_flight is not None:
                self._in_flight.cancel()

    async def _catch_up(self, after: int) -> AsyncIterator[FeedItem | Heartbeat]:
        """Events committed around the hand-over that neither the replay nor the subscription saw."""
        async with self.sessions() as session:
            async for event in self._history(session, after):
                if event.id in self._seen or not self.filters.accepts(event.event_type, event.data):
                    continue
                self._remember(event.id)
                self.last_id = max(self.last_id or 0, event.id)
                yield FeedItem(event.id, event.event_type, encode_event(event).decode())

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
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

import msgspec
from litestar.types import WebSocketSendEvent
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

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
        self, hub: LiveHub, names: list[str], after: int | None
    ) -> AsyncIterator[AsyncIterator[FeedItem | Heartbeat]]:
        """Subscribe, then iterate: the replay after `after` (None: live only), then live events."""
        async with hub.attach(self.sink, names):
            yield self._items(self.sink, after)

    async def _items(self, sink: Sink, after: int | None) -> AsyncIterator[FeedItem | Heartbeat]:
        recent: collections.deque[int] = collections.deque(maxlen=DEDUPE_WINDOW)
        seen: set[int] = set()

        def remember(event_id: int) -> None:
            if len(recent) == recent.maxlen:
                seen.discard(recent[0])
            recent.append(event_id)
            seen.add(event_id)

        loop = asyncio.get_running_loop()
        catch_up_at: float | None = None
        if after is not None:
            async with self.sessions() as session:
                async for event in self._history(session, after):
                    if sink.overflowed:
                        raise FeedOverflowError
                    if self.filters.accepts(event.event_type, event.data):
                        remember(event.id)
                        self.last_id = event.id
                        yield FeedItem(event.id, event.event_type, encode_event(event).decode())
            catch_up_at = loop.time() + CATCH_UP_AFTER_SECONDS
        # One timer at a time wakes the feed for its next deadline (catch-up, heartbeat), not one per event.
        active_at = loop.time()
        timer: asyncio.TimerHandle | None = None
        try:
            while True:
                if sink.overflowed:
                    raise FeedOverflowError
                if sink.events:
                    live = sink.events.popleft()
                    active_at = loop.time()
                    if live.id is None:  # live only (model output as it streams): never replayed or deduplicated
                        yield FeedItem(None, live.event_type, live.text, live.message)
                        continue
                    if live.id in seen:
                        continue
                    if catch_up_at is not None:
                        remember(live.id)
                    self.last_id = max(self.last_id or 0, live.id)
                    yield FeedItem(live.id, live.event_type, live.text, live.message)
                    continue
                now = loop.time()
                if catch_up_at is not None and now >= catch_up_at:
                    catch_up_at = None
                    # Late commits have ids near the hand-over: look from the oldest id still remembered.
                    since = max(after or 0, (recent[0] - 1) if recent else 0)
                    async for item in self._catch_up(since, seen, remember):
                        active_at = loop.time()
                        yield item
                    continue
                if now >= active_at + self.heartbeat_seconds:
                    active_at = now
                    yield Heartbeat()
                    continue
                if timer is None or sink.woken:
                    if timer is not None:
                        timer.cancel()
                    deadline = active_at + self.heartbeat_seconds
                    if catch_up_at is not None:
                        deadline = min(deadline, catch_up_at)
                    sink.woken = False
                    timer = loop.call_at(deadline, sink.wake)
                await sink.wait()
        finally:
            if timer is not None:
                timer.cancel()

    async def _catch_up(
        self, after: int, seen: set[int], remember: Callable[[int], None]
    ) -> AsyncIterator[FeedItem | Heartbeat]:
        """Events committed around the hand-over that neither the replay nor the subscription saw."""
        async with self.sessions() as session:
            async for event in self._history(session, after):
                if event.id in seen or not self.filters.accepts(event.event_type, event.data):
                    continue
                remember(event.id)
                self.last_id = max(self.last_id or 0, event.id)
                yield FeedItem(event.id, event.event_type, encode_event(event).decode())

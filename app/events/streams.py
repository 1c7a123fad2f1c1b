"""One feed of events for a client: replay from the event table, then live, with no gap and no duplicate.

The event table is the history; the channel backend only carries live events. Ids are given in
commit order (`app.events.outbox`) and the process's hub hands live events on in id order
(`app.events.hub`), with a position: every event up to it is in the table. A feed attaches to the
hub first, buffering live events (all after that position), then reads the table from the client's
last id up to the position, then hands over to the buffered and later live events. Replay and live
are one sequence: no event is missed, none comes twice, ids only grow.

The buffer is bounded: a client too slow to keep up is told to reconnect with `after` instead of
slowing the others or growing the server's memory. When nothing happens for a while the feed
yields a heartbeat, which also finds connections that died without closing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

import msgspec
from litestar.types import WebSocketSendEvent
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.events.eager import start_now
from app.events.hub import LiveHub
from app.events.live import LiveEvent, Sink
from app.events.models import Event
from app.events.outbox import encode_event

REPLAY_BATCH = 500
MAX_LAST = 1000


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
        owner: UUID | None = None,
    ) -> None:
        """`sessions` opens a database session; `scope`: the projects whose events the feed carries
        (None: every event); `owner`: the client's token id (the feed ends when it is revoked)."""
        self.sessions = sessions
        self.scope = list(scope) if scope is not None else None
        self.filters = filters
        self.heartbeat_seconds = heartbeat_seconds
        self.last_id: int | None = None  # of the last event handed to the client
        # The last id the transport wrote, and where the feed began (what the client had, or the
        # hub's position for a live-only feed): every event of the feed up to either was written.
        self.written_id: int | None = None
        self.began_after = 0
        self.sink = Sink(filters.accepts_live, max_backlog, owner)
        # Ids up to this are not sent again: they were replayed, or the client had them (`after`).
        self._floor = 0
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
            self.written_id = item.id

    def resume_point(self) -> int:
        """An id to reconnect `after` with that loses nothing: every event of this feed up to it was written.

        Events go out in id order, so it is the last id written (or where the feed began).
        """
        return self.written_id if self.written_id is not None else self.began_after

    async def start_after_last(self, last: int) -> int:
        """The id to replay after so that the client gets the last `last` events (of its filters)."""
        async with self.sessions() as session:
            statement = select(Event.id).where(*self._where()).order_by(Event.id.desc()).limit(min(last, MAX_LAST))
            ids = list(await session.scalars(statement))
        return (min(ids) - 1) if ids else 0

    async def _history(self, session: AsyncSession, after: int, up_to: int) -> AsyncIterator[Event]:
        while after < up_to:
            statement = (
                select(Event)
                .where(Event.id > after, Event.id <= up_to, *self._where())
                .order_by(Event.id)
                .limit(REPLAY_BATCH)
            )
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
        after: int | None,
        send: Callable[[WebSocketSendEvent], Awaitable[None]] | None = None,
    ) -> AsyncIterator[AsyncIterator[FeedItem | Heartbeat]]:
        """Attach to the hub, then iterate: the replay after `after` (None: live only), then live events.

        With `send` (a WebSocket's ASGI send), live events that find the feed idle are not yielded:
        they are written by the hub's pass over its feeds, one after the other, each a few microseconds
        when the client keeps up. What the iteration yields (the replay, heartbeats, events that arrive
        while a write to a backed-up client is still under way) the caller writes itself, as before.
        """
        self._send = send
        async with hub.attach(self.sink, self.scope) as position:
            self.began_after = position if after is None else after  # `resume_point()` from the start
            yield self._items(self.sink, after, position)

    def _write_now(self, event: LiveEvent) -> None:
        """`Sink.direct`: write a live event to the client now, in the hub's pass. Never raises."""
        if event.id is not None:
            if event.id <= self._floor:
                return
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
                self.written_id = event.id
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
            self.written_id = event_id
        self.sink.wake()  # the feed sends what waited meanwhile, then hands back to the hub

    def _stop_writing(self, exc: BaseException) -> None:
        self._failure = exc
        self.sink.direct = None
        self.sink.wake()

    async def _items(self, sink: Sink, after: int | None, position: int) -> AsyncIterator[FeedItem | Heartbeat]:
        """The replay after `after` up to the hub's `position`, then the live events (all after it)."""
        loop = asyncio.get_running_loop()
        self._floor = max(position, after or 0)
        if after is not None and after < position:
            async with self.sessions() as session:
                async for event in self._history(session, after, position):
                    if sink.overflowed:
                        raise FeedOverflowError
                    if sink.gone:
                        return
                    if self.filters.accepts(event.event_type, event.data):
                        self.last_id = event.id
                        yield FeedItem(event.id, event.event_type, encode_event(event).decode())
        # One timer at a time wakes the feed for its next deadline (the heartbeat), not one per event.
        self._active_at = loop.time()
        timer: asyncio.TimerHandle | None = None
        try:
            while True:
                sink.direct = None  # what is sent now, this iteration sends, in order
                if sink.gone:
                    return
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
                    if live.id is None:  # live only (model output as it streams): never replayed
                        yield FeedItem(None, live.event_type, live.text, live.message)
                        continue
                    if live.id <= self._floor:
                        continue  # the client had it (it resumed after a later id than this process had seen)
                    self.last_id = live.id
                    yield FeedItem(live.id, live.event_type, live.text, live.message)
                    continue
                now = loop.time()
                if now >= self._active_at + self.heartbeat_seconds:
                    self._active_at = now
                    yield Heartbeat()
                    continue
                if timer is None or sink.woken:
                    if timer is not None:
                        timer.cancel()
                    sink.woken = False
                    timer = loop.call_at(self._active_at + self.heartbeat_seconds, sink.wake)
                if self._send is not None:
                    sink.direct = self._write_now  # idle and past the replay: the hub writes live events
                await sink.wait()
        finally:
            sink.direct = None
            if timer is not None:
                timer.cancel()
            if self._in_flight is not None:
                self._in_flight.cancel()

"""Live events of one api process: one subscription, put in id order, handed to every local feed.

Every stored event is published on the global channel once its transaction commits. Ids are given
in commit order without gaps (`app.events.outbox`), but publishes from several processes (api,
workers) and several sessions reach this process in any order, and one can be lost (Redis away,
a process killed between its commit and its publish). The hub therefore keeps a *position*: the
id up to which it has handed every event, in order, to its feeds. An event right after the
position is handed on at once; one further ahead waits until the missing ones arrive. If they have
not after `GAP_SECONDS` they are read from the event table, where they are already visible: an id
is only given once every smaller one is committed. When no event arrives for `CHECK_SECONDS` the
hub also reads the table after its position, for events whose publish was lost at the end of a
burst. So every feed sees the one sequence of the table, live, and a feed that starts at the
hub's position has nothing to replay beyond it (`app.events.streams`).

Live-only messages (model output as it streams, no id) are handed on as they come.

The process subscribes once, decodes each event once, and appends it to each interested feed's
bounded buffer: a `deque` and, only if that feed is waiting, one wake-up. A buffer that would grow
past its bound is marked overflowed instead (its feed tells the client to reconnect with `after`):
a slow client never holds up the others or the process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from uuid import UUID

import structlog
from litestar.channels import ChannelsPlugin, Subscriber
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.channels import GLOBAL_CHANNEL
from app.events.live import LiveEvent, Sink, decode_live
from app.events.models import Event
from app.events.outbox import encode_event

__all__ = ["CHECK_SECONDS", "GAP_SECONDS", "SERVER_SEND_KEY", "LiveHub"]

logger = structlog.get_logger(__name__)

# Where the app (`app.main.BotArmy`) keeps a WebSocket's server-side ASGI send in its scope.
SERVER_SEND_KEY = "botarmy.server_send"
GAP_SECONDS = 0.25  # how long an event ahead of a missing one waits for it before the table is read
CHECK_SECONDS = 1.0  # idle this long: read the table after the position (a publish lost at the end)
TABLE_BATCH = 500

Sessions = Callable[[], contextlib.AbstractAsyncContextManager[AsyncSession]]


class LiveHub:
    """The process's one subscription to the global channel, in id order, shared by its feeds."""

    def __init__(
        self,
        channels: ChannelsPlugin,
        sessions: Sessions,
        *,
        gap_seconds: float = GAP_SECONDS,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.channels = channels
        self.sessions = sessions
        self.gap_seconds = gap_seconds
        self.check_seconds = check_seconds
        # Every event up to this id has been handed to the feeds (or was before any feed attached).
        self.position = 0
        self.read_from_table = 0  # events the hub had to read from the table (their publish came late or never)
        self._everything: set[Sink] = set()
        self._by_project: dict[str, set[Sink]] = {}
        self._by_owner: dict[UUID, set[Sink]] = {}  # the feeds of each token (see `end_feeds_of`)
        # Called with every event of its type, before the feeds get it (`watch`).
        self._watchers: dict[str, Callable[[LiveEvent], None]] = {}
        self._ahead: dict[int, LiveEvent] = {}  # arrived before an event with a smaller id
        self._gap_timer: asyncio.TimerHandle | None = None
        self._reading_table: asyncio.Task[None] | None = None
        self._last_arrival = 0.0
        self._subscriber: Subscriber | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._going_away = False

    @property
    def sinks(self) -> int:
        return len(self._everything) + sum(len(sinks) for sinks in self._by_project.values())

    async def start(self) -> None:
        """Subscribe and find the position (the highest id): at the first attach, once."""
        async with self._lock:
            if self._subscriber is not None:
                return
            subscriber = await self.channels.subscribe([GLOBAL_CHANNEL])
            try:
                # After subscribing: an event committed later than this read is published to us.
                self.position = await self._highest()
            except BaseException:
                await self.channels.unsubscribe(subscriber, [GLOBAL_CHANNEL])
                raise
            self._subscriber = subscriber
            self._last_arrival = asyncio.get_running_loop().time()
            self._tasks = [asyncio.create_task(self._read(subscriber)), asyncio.create_task(self._check())]

    async def close(self) -> None:
        for task in (*self._tasks, self._reading_table):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        if self._subscriber is not None:
            with contextlib.suppress(Exception):  # the backend may be gone already
                await self.channels.unsubscribe(self._subscriber, [GLOBAL_CHANNEL])
            self._subscriber = None

    def watch(self, event_type: str, watcher: Callable[[LiveEvent], None]) -> None:
        """Call `watcher` (it must not raise) with each event of `event_type` this process hears of, in
        id order, before any feed gets it: also while no feed is attached, once the hub has started."""
        self._watchers[event_type] = watcher

    def end_feeds_of(self, owner: UUID, code: int, reason: str) -> int:
        """End every feed of the token `owner` now (its transport closes with `code` and `reason`)."""
        sinks = tuple(self._by_owner.get(owner, ()))
        for sink in sinks:
            sink.end(code, reason)
        return len(sinks)

    def going_away(self) -> None:
        """The process is shutting down: every feed says goodbye to its client now (WebSocket: 1001)."""
        self._going_away = True
        for sink in (*self._everything, *(sink for sinks in self._by_project.values() for sink in sinks)):
            sink.go_away()

    @contextlib.asynccontextmanager
    async def attach(self, sink: Sink, scope: Sequence[UUID] | None) -> AsyncIterator[int]:
        """`sink` gets, in id order, the events of the projects of `scope` (None: all) after the
        position this yields, until it exits. Every event up to that position is in the table."""
        await self.start()
        keys = None if scope is None else list(dict.fromkeys(str(project_id) for project_id in scope))
        if keys is None:
            self._everything.add(sink)
        else:
            for key in keys:
                self._by_project.setdefault(key, set()).add(sink)
        if sink.owner is not None:
            self._by_owner.setdefault(sink.owner, set()).add(sink)
        if self._going_away:
            sink.go_away()
        try:
            yield self.position
        finally:
            if sink.owner is not None and (owned := self._by_owner.get(sink.owner)) is not None:
                owned.discard(sink)
                if not owned:
                    del self._by_owner[sink.owner]
            if keys is None:
                self._everything.discard(sink)
            else:
                for key in keys:
                    sinks = self._by_project.get(key)
                    if sinks is not None:
                        sinks.discard(sink)
                        if not sinks:
                            del self._by_project[key]

    # -- ordering -------------------------------------------------------------------------------

    async def _read(self, subscriber: Subscriber) -> None:
        loop = asyncio.get_running_loop()
        async for payload in subscriber.iter_events():
            now = loop.time()
            self._last_arrival = now
            event = decode_live(payload, now)
            if event is not None:
                self._receive(event)

    def _receive(self, event: LiveEvent) -> None:
        if event.id is None:  # live only: never stored, so never out of order
            self._hand_on(event)
            return
        if event.id <= self.position:
            return  # already handed on (read from the table meanwhile), or older than the feeds
        if not self._everything and not self._by_project:
            # No feed: nothing to order. Every event up to a visible id is visible, so this is a position.
            if self._watchers and (watcher := self._watchers.get(event.event_type)) is not None:
                watcher(event)
            self.position = event.id
            self._ahead = {i: e for i, e in self._ahead.items() if i > event.id}
            return
        if event.id != self.position + 1:
            self._ahead[event.id] = event
            if self._gap_timer is None and self._reading_table is None:
                self._gap_timer = asyncio.get_running_loop().call_later(self.gap_seconds, self._gap_timed_out)
            return
        self._deliver(event)
        self._deliver_ahead()

    def _deliver(self, event: LiveEvent) -> None:
        self.position = event.id or self.position
        self._hand_on(event)

    def _deliver_ahead(self) -> None:
        while (following := self._ahead.pop(self.position + 1, None)) is not None:
            self._deliver(following)
        if not self._ahead and self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None

    def _hand_on(self, event: LiveEvent) -> None:
        if self._watchers and (watcher := self._watchers.get(event.event_type)) is not None:
            watcher(event)
        if self._everything:
            for sink in tuple(self._everything):
                sink.offer(event)
        if event.project_id is not None and (sinks := self._by_project.get(event.project_id)):
            for sink in tuple(sinks):
                sink.offer(event)

    def _gap_timed_out(self) -> None:
        self._gap_timer = None
        if self._ahead and self._reading_table is None:
            self._reading_table = asyncio.create_task(self._catch_up(max(self._ahead)))

    async def _check(self) -> None:
        """While idle, read the table after the position: events whose publish never came."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.check_seconds)
            idle = loop.time() - self._last_arrival >= self.check_seconds
            if idle and self._reading_table is None and (self._everything or self._by_project):
                self._reading_table = asyncio.create_task(self._catch_up(None))
                with contextlib.suppress(Exception):  # logged by _catch_up
                    await asyncio.shield(self._reading_table)

    async def _catch_up(self, up_to: int | None) -> None:
        """Hand on the events after the position, up to `up_to` (None: all there are), from the table."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                statement = select(Event).where(Event.id > self.position).order_by(Event.id).limit(TABLE_BATCH)
                if up_to is not None:
                    statement = statement.where(Event.id <= up_to)
                async with self.sessions() as session:
                    rows = list(await session.scalars(statement))
                for row in rows:
                    if row.id <= self.position:
                        continue  # its live copy came meanwhile
                    live = self._ahead.pop(row.id, None)
                    if live is None:
                        self.read_from_table += 1
                        live = decode_live(encode_event(row), loop.time())
                    if live is not None:
                        self._deliver(live)
                self._deliver_ahead()
                if len(rows) < TABLE_BATCH:
                    break
        except Exception as exc:  # noqa: BLE001 - the database is away: the next gap or check tries again
            logger.warning("live_catch_up_failed", error=type(exc).__name__)
        finally:
            self._reading_table = None
        if self._ahead:
            # Still a gap (ids read past a hole, or the read failed): wait and read again.
            if self._ahead and min(self._ahead) <= self.position:
                self._ahead = {i: e for i, e in self._ahead.items() if i > self.position}
            self._gap_timer = loop.call_later(self.gap_seconds, self._gap_timed_out)

    async def _highest(self) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.max(Event.id))) or 0)

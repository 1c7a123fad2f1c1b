"""A live event as this process decodes it from the channel, once for all its feeds, and one feed's
bounded buffer of them (`Sink`), filled by the hub (`app.events.hub`).

A buffer that would grow past its bound is marked overflowed instead (its feed tells the client to
reconnect with `after`): a slow client never holds up the others or the process's memory.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any
from uuid import UUID

import msgspec
import structlog
from litestar.types import WebSocketSendEvent

logger = structlog.get_logger(__name__)

CLOSE_GOING_AWAY = 1001  # the server shuts down: reconnect (to another instance) with ?after=<last id>
GOING_AWAY_REASON = "server shutting down; reconnect with after"


class LiveEvent(msgspec.Struct, frozen=True, gc=False):  # strings, ints and a dict of strings: no cycles
    """An event as it came over a channel, decoded once for every feed of the process."""

    id: int | None  # None: a live-only message (model output as it streams)
    event_type: str
    project_id: str | None
    agent_type: str | None
    text: str  # the JSON message, sent as it is
    # The ASGI message that sends it, built once and shared by every socket: nothing on the way mutates it.
    message: WebSocketSendEvent
    received_at: float  # the event loop's clock when this process read it


class _Envelope(msgspec.Struct):
    id: int | None
    event_type: str
    project_id: str | None = None
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
        envelope.project_id,
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
        "end_code",
        "end_reason",
        "events",
        "gone",
        "max_backlog",
        "on_end",
        "overflowed",
        "owner",
        "woken",
    )

    def __init__(self, accepts: Callable[[LiveEvent], bool], max_backlog: int, owner: UUID | None = None) -> None:
        """`accepts(event)` chooses the events this feed wants (its filters); `owner`: the id of the
        token the feed's client presented (its feeds are ended when that token is revoked)."""
        self.accepts = accepts
        self.max_backlog = max_backlog
        self.owner = owner
        # Set on overflow: the transport may be stuck sending to this client and must not wait for the feed.
        self.cut_off = asyncio.Event()
        self.events: collections.deque[LiveEvent] = collections.deque()
        self.overflowed = False
        self.gone = False  # ended (`end`): the process shuts down, or the client's token was revoked
        self.end_code = 0  # why, as a WebSocket close code (1001 going away, 4401 revoked) and its reason
        self.end_reason = ""
        self.on_end: Callable[[], None] | None = None  # the transport's goodbye (WebSocket: a close frame)
        self.woken = False  # set by `wake`: the feed has something else to do (a timer fired)
        # Takes an event instead of the buffer, while the buffer is empty; it must not raise.
        self.direct: Callable[[LiveEvent], None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, event: LiveEvent) -> None:
        if self.overflowed or self.gone or not self.accepts(event):
            return
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

    def go_away(self) -> None:
        """The process is shutting down: nothing more is offered, and the feed ends."""
        self.end(CLOSE_GOING_AWAY, GOING_AWAY_REASON)

    def end(self, code: int, reason: str) -> None:
        """Nothing more is offered, the transport says goodbye (`on_end`) now, and the feed ends."""
        if self.gone:
            return
        self.gone = True
        self.end_code, self.end_reason = code, reason
        self.direct = None
        self.events.clear()
        if self.on_end is not None:
            self.on_end()
        self.wake()

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

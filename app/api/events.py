"""Event streams: WebSocket per project and for everything, and Server-Sent Events (the log: `app.api.audit`).

Streams take `?after=<id>` (replay everything later, then live: see `app/events/streams.py`) or
`?last=N`, and filters `?event_types=a,b&agent_types=x,y`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, cast
from uuid import UUID

import msgspec
from litestar import Controller, Request, WebSocket, get, websocket
from litestar.di import NamedDependency
from litestar.exceptions import TooManyRequestsException, WebSocketDisconnect
from litestar.params import FromPath
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.types import Send

from app.api.chat import post_message
from app.api.guards import access_guard
from app.config import Settings
from app.core.exceptions import AppError, InvalidInputError, NotFoundError, ServiceUnavailableError, TooManyError
from app.core.ratelimit import RateLimiter, rate_limiter_of
from app.core.runtime import Runtime
from app.core.security import Principal, Role, needs
from app.events.eager import start_now
from app.events.hub import SERVER_SEND_KEY
from app.events.limits import CLOSE_TRY_AGAIN_LATER, StreamLimits, StreamRefusedError
from app.events.streams import MAX_LAST, Feed, FeedItem, FeedOverflowError, Filters, Heartbeat, parse_list
from app.projects.models import Project
from app.tasks.models import AgentType
from app.tokens.auth import CLOSE_TOO_MANY, CLOSE_UNAUTHORIZED
from app.tokens.revoked import EXPIRED_REASON, REVOKED_REASON, RevokedTokens, TokenRevokedError
from app.tokens.services import TokenService

# Close codes in the private range (4000-4999), mirroring the HTTP status they stand for.
CLOSE_BAD_REQUEST = 4400
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4429  # fell too far behind: reconnect with the ?after=<id> its reason gives
# Also 4401 (app.tokens.auth): the token is unknown, or was revoked while the stream was open; 4429
# too for too many messages or streams of one token, 1013 for a process at its streams' cap.
CLOSE_TIMEOUT_SECONDS = 5.0
# The handshake's answer carries the id the stream starts after (the hub's position for a live-only one).
STREAM_POSITION_HEADER = "x-stream-position"
_NAME = re.compile(r"^[a-z_]{1,64}$")


class StreamRequest:
    """The query of a stream request, checked: where to start, and what to send."""

    def __init__(self, query: dict[str, Any], last_event_id: str | None = None) -> None:
        after_raw = query.get("after") or last_event_id
        last_raw = query.get("last")
        try:
            self.after = int(after_raw) if after_raw not in (None, "") else None
            self.last = int(last_raw) if last_raw not in (None, "") else None
        except ValueError:
            raise ValueError("after and last must be whole numbers") from None
        if self.after is not None and self.after < 0:
            raise ValueError("after: an event id, 0 or more")
        if self.last is not None and not 1 <= self.last <= MAX_LAST:
            raise ValueError(f"last: from 1 to {MAX_LAST}")
        event_types = parse_list(query.get("event_types"), name="event_types")
        if event_types is not None and not all(_NAME.match(name) for name in event_types):
            raise ValueError("event_types: names of lowercase letters and underscores")
        agent_types = parse_list(query.get("agent_types"), [a.value for a in AgentType], name="agent_types")
        self.filters = Filters(event_types=event_types, agent_types=agent_types)


def _feed(runtime: Runtime, scope: list[UUID] | None, filters: Filters, principal: Principal) -> Feed:
    settings: Settings = runtime.settings
    return Feed(
        runtime.session,
        scope,
        filters,
        max_backlog=settings.server.stream_max_backlog,
        heartbeat_seconds=settings.server.stream_heartbeat_seconds,
        owner=principal.token_id,
    )


async def _start(feed: Feed, stream: StreamRequest) -> int | None:
    if stream.after is not None:
        return stream.after
    if stream.last is not None:
        return await feed.start_after_last(stream.last)
    return None


async def _visible_project(runtime: Runtime, principal: Principal, project_id: UUID) -> bool:
    async with runtime.session() as session:
        return principal.can_see(project_id) and await session.get(Project, project_id) is not None


async def _still_valid(runtime: Runtime, revoked: RevokedTokens, principal: Principal) -> bool:
    """Whether the stream's token is still valid, checked once its feed is attached to the hub.

    A revocation committed between the handshake's check and the attach came before the hub's
    position, so the hub never hands it on: the table says. Any later one reaches the feed.
    """
    if principal.token_id in revoked:
        return False
    async with runtime.session() as session:
        return await TokenService(session=session).is_active(principal.token_id)


def _invalid_reason(principal: Principal) -> str:
    return EXPIRED_REASON if principal.expired() else REVOKED_REASON


def _end_at_expiry(feed: Feed, principal: Principal) -> asyncio.TimerHandle | None:
    """End the feed when its token expires, as a revocation does (4401 and the reason); cancel the
    timer when the stream ends. None for a token that never expires."""
    seconds_left = principal.seconds_left()
    if seconds_left is None:
        return None
    loop = asyncio.get_running_loop()
    return loop.call_later(max(seconds_left, 0.0), feed.sink.end, CLOSE_UNAUTHORIZED, EXPIRED_REASON)


async def _stream(
    socket: WebSocket[Principal, Any, Any], scope: list[UUID] | None, project_id: UUID | None = None
) -> None:
    """The stream of `scope` (None: every event); `project_id`: a project's own stream (chat allowed)."""
    try:
        with socket.app.state.stream_limits.hold(socket.user.token_id):
            await _open_stream(socket, scope, project_id)
    except StreamRefusedError as exc:
        await socket.accept()
        await socket.close(code=exc.code, reason=exc.reason)


async def _open_stream(
    socket: WebSocket[Principal, Any, Any], scope: list[UUID] | None, project_id: UUID | None
) -> None:
    runtime: Runtime = socket.app.state.runtime
    revoked: RevokedTokens = socket.app.state.revoked_tokens
    if project_id is not None and not await _visible_project(runtime, socket.user, project_id):
        # Accept first so that the client receives the close code and reason, not a bare 403.
        await socket.accept()
        await socket.close(code=CLOSE_NOT_FOUND, reason=f"project {project_id} does not exist")
        return
    try:
        stream = StreamRequest(dict(socket.query_params))
    except ValueError as exc:
        await socket.accept()
        await socket.close(code=CLOSE_BAD_REQUEST, reason=str(exc)[:120])
        return
    feed = _feed(runtime, scope, stream.filters, socket.user)
    # Attached to the hub before accepting: once the client's handshake completes, no event can slip by.
    after = await _start(feed, stream)
    # Live events are written by the hub's pass over the feeds (`Feed.open`), straight to the server's
    # send: Litestar's wrappers of it do nothing for a data frame (`app.main.BotArmy`).
    server_send = cast("Send | None", socket.scope.get(SERVER_SEND_KEY)) or socket.send
    async with feed.open(socket.app.state.live_hub, after, send=server_send) as items:
        if not await _still_valid(runtime, revoked, socket.user):
            await socket.accept()
            await socket.close(code=CLOSE_UNAUTHORIZED, reason=_invalid_reason(socket.user))
            return
        # Where the stream starts, for a client to reconnect `?after=` even if it receives nothing first.
        await socket.accept(headers={STREAM_POSITION_HEADER: str(feed.resume_point())})
        # The hub calls this for every stream at once on shutdown (1001, going away), before the
        # server closes the connections, and for a token's streams when it is revoked (4401): the
        # close frame is written in that same pass.
        feed.sink.on_end = lambda: _close_now(socket, feed.sink.end_code, feed.sink.end_reason)
        if feed.sink.gone:  # the shutdown or a revocation came while this stream attached
            _close_now(socket, feed.sink.end_code, feed.sink.end_reason)
            return
        expiry = _end_at_expiry(feed, socket.user)
        try:
            await _serve(socket, feed, items, project_id)
        finally:
            if expiry is not None:
                expiry.cancel()


async def _serve(
    socket: WebSocket[Principal, Any, Any],
    feed: Feed,
    items: AsyncIterator[FeedItem | Heartbeat],
    project_id: UUID | None,
) -> None:
    """Send the feed's items and take the client's messages until one side ends."""

    async def send_all() -> None:
        async for item in items:
            if isinstance(item, Heartbeat):
                await socket.send_json({"event_type": "heartbeat", "last_id": feed.resume_point()})
            else:
                await socket.send(item.asgi_message())  # `send_text` would build the same message per socket
                feed.wrote(item)

    sender = asyncio.create_task(send_all())
    receiver = asyncio.create_task(_incoming(socket, project_id))
    # A client too far behind is cut off at once, even while a send to it waits for its socket to drain.
    cut_off = asyncio.create_task(feed.sink.cut_off.wait())
    done, _ = await asyncio.wait({sender, receiver, cut_off}, return_when=asyncio.FIRST_COMPLETED)
    for task in (sender, receiver, cut_off):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
            await task
    if feed.sink.gone:
        return
    if cut_off in done or (sender in done and isinstance(sender.exception(), FeedOverflowError)):
        reason = f"too far behind; reconnect with ?after={feed.resume_point()}"
        # The close frame waits behind what the client has not read; one that reads nothing is dropped.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await socket.close(code=CLOSE_TOO_SLOW, reason=reason)


def _close_now(socket: WebSocket[Principal, Any, Any], code: int, reason: str) -> None:
    """Close with `code` now, on the caller's stack (a send waits only for a backed-up client)."""
    if socket.connection_state == "disconnect":
        return
    with contextlib.suppress(Exception):
        pending = start_now(socket.close(code=code, reason=reason))
        if pending is not None:
            pending.add_done_callback(_ignore_outcome)


def _ignore_outcome(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # a client gone meanwhile: nothing to report


async def _incoming(socket: WebSocket[Principal, Any, Any], project_id: UUID | None) -> None:
    """Chat over the socket: `{"type": "message", "message": "..."}` on a project's stream (product
    owner role), acknowledged with `message_accepted` or refused with `error`. Returns on disconnect.

    Every frame counts against the token's request budget (`app.core.ratelimit`): past it, the socket
    is closed with 4429. A frame is acted on only while the token is valid: a revoked one closes the
    socket with 4401 (the process's set of revoked tokens, then the table in the message's transaction).
    """
    runtime: Runtime = socket.app.state.runtime
    revoked: RevokedTokens = socket.app.state.revoked_tokens
    limiter = rate_limiter_of(socket.scope)
    principal = socket.user
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            raw = await socket.receive_data(mode="text")
            try:
                if limiter is not None:
                    await limiter.count(socket.scope, principal.token_id)
                if principal.token_id in revoked or principal.expired():
                    raise TokenRevokedError
                incoming = _decoder.decode(raw)
                if project_id is None:
                    raise InvalidInputError("messages are sent on a project's stream, /ws/projects/{id}")
                if not principal.has_role(Role.PRODUCT_OWNER):
                    raise InvalidInputError("sending messages needs the product_owner role")
                accepted = await post_message(runtime, principal, project_id, incoming.message, check_token=True)
            except TooManyRequestsException:
                await socket.close(code=CLOSE_TOO_MANY, reason=_too_many(limiter))
                return
            except TokenRevokedError:
                await socket.close(code=CLOSE_UNAUTHORIZED, reason=_invalid_reason(principal))
                return
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                await socket.send_json({"event_type": "error", "detail": f"not a message: {exc}"})
            except AppError as exc:
                await socket.send_json({"event_type": "error", "detail": exc.detail})
            else:
                await socket.send_json(
                    {
                        "event_type": "message_accepted",
                        "message_id": accepted.message_id,
                        "task_id": str(accepted.task_id),
                    }
                )


def _too_many(limiter: RateLimiter | None) -> str:
    limit = limiter.limit if limiter is not None else 0
    return f"too many requests: this token may send {limit} requests and messages a minute"


class SocketMessage(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["message"]
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]


_decoder = msgspec.json.Decoder(SocketMessage)


@websocket("/ws/projects/{project_id:uuid}", name="project_stream", opt=needs(Role.VIEWER), guards=[access_guard])
async def project_stream(socket: WebSocket[Principal, Any, Any], project_id: FromPath[UUID]) -> None:
    await _stream(socket, [project_id], project_id)


@websocket("/ws", name="global_stream", opt=needs(Role.VIEWER), guards=[access_guard])
async def global_stream(socket: WebSocket[Principal, Any, Any]) -> None:
    """Every event; for a token limited to some projects, every event of those projects."""
    scope = socket.user.project_ids
    await _stream(socket, None if scope is None else sorted(scope))


def _unauthorized_message(reason: str) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        event="error", data=msgspec.json.encode({"detail": reason, "code": CLOSE_UNAUTHORIZED}).decode()
    )


class EventController(Controller):
    tags = ["events"]
    opt = needs(Role.VIEWER)

    @get(
        "/api/v1/projects/{project_id:uuid}/events/stream",
        operation_id="StreamProjectEvents",
        media_type="text/event-stream",
    )
    async def sse(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        project_id: FromPath[UUID],
    ) -> ServerSentEvent:
        """Server-Sent Events: the WebSocket stream's events and guarantees; resumes from `Last-Event-ID`."""
        runtime: Runtime = request.app.state.runtime
        if not await _visible_project(runtime, principal, project_id):
            raise NotFoundError(f"Project {project_id} does not exist.")
        try:
            stream = StreamRequest(dict(request.query_params), request.headers.get("last-event-id"))
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        # The WebSocket's caps, counted together with the sockets: refused with a status while one
        # can still be sent; the stream is held from its first step (a generator never started, its
        # client gone at once, holds nothing).
        limits: StreamLimits = request.app.state.stream_limits
        try:
            limits.check(principal.token_id)
        except StreamRefusedError as exc:
            refused = ServiceUnavailableError if exc.code == CLOSE_TRY_AGAIN_LATER else TooManyError
            raise refused(exc.reason) from None
        feed = _feed(runtime, [project_id], stream.filters, principal)
        start = await _start(feed, stream)
        revoked: RevokedTokens = request.app.state.revoked_tokens

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            try:
                with limits.hold(principal.token_id):
                    async with feed.open(request.app.state.live_hub, start) as items:
                        if not await _still_valid(runtime, revoked, principal):
                            yield _unauthorized_message(_invalid_reason(principal))
                            return
                        expiry = _end_at_expiry(feed, principal)
                        try:
                            async for item in items:
                                if isinstance(item, FeedItem):
                                    yield ServerSentEventMessage(
                                        data=item.text,
                                        event=item.event_type,
                                        id=str(item.id) if item.id is not None else None,
                                    )
                                    feed.wrote(item)
                                else:
                                    yield ServerSentEventMessage(comment="keep-alive")
                        finally:
                            if expiry is not None:
                                expiry.cancel()
                        if feed.sink.end_code == CLOSE_UNAUTHORIZED:
                            # Revoked or expired: then the stream ends; a reconnection gets 401.
                            yield _unauthorized_message(feed.sink.end_reason)
            except StreamRefusedError as exc:  # others took the last places since the check
                yield ServerSentEventMessage(
                    event="error", data=msgspec.json.encode({"detail": exc.reason, "code": exc.code}).decode()
                )
            except FeedOverflowError:
                yield ServerSentEventMessage(
                    event="error", data=f'{{"detail": "too far behind; reconnect from id {feed.resume_point()}"}}'
                )

        return ServerSentEvent(messages(), retry_duration=1000)

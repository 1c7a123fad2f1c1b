"""Requests per minute per token: a fixed one-minute window, counted in Redis when there is one.

Not Litestar's `RateLimitMiddleware`: it keeps every request's timestamp of the window as one JSON
list per token, which each request reads and writes back whole (two Redis round trips and a list as
long as the limit), under one lock for the whole process, so that every request waited for the
others' round trips; and its read-then-write lost counts between two api instances. Here a request
is one atomic `INCR` of the window's counter (one round trip, whatever the limit), or a dict entry
in the embedded default. The responses keep the same headers (`RateLimit-*`, and `Retry-After` on a
429, see `app.core.exceptions`).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import structlog
from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.middleware.rate_limit import get_remote_address
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.config import RedisSettings, ServerSettings
from app.core.headers import DOCS_PREFIX
from app.core.security import hash_token, token_of

logger = structlog.get_logger(__name__)

WINDOW_SECONDS = 60


class RequestCounter(Protocol):
    async def count(self, identity: str, window: int) -> int | None:
        """This request's number in `identity`'s `window` (1 for the first); None: not counted."""


class MemoryCounter:
    """The embedded default's counters: one process, so a dict of the current window's counts."""

    def __init__(self) -> None:
        self._window = -1
        self._counts: dict[str, int] = {}

    async def count(self, identity: str, window: int) -> int | None:
        if window != self._window:  # a new minute: the old counts are of no use any more
            self._window, self._counts = window, {}
        number = self._counts.get(identity, 0) + 1
        self._counts[identity] = number
        return number


class RedisCounter:
    """Counters shared by every api instance, so that a token's limit holds across them.

    While Redis is unreachable the limit is not enforced (fails open): refusing every request
    because a safeguard's counter is away would turn a Redis outage into a full API outage.
    Work that really needs Redis (the queue) still answers 503.
    """

    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:ratelimit:"

    async def count(self, identity: str, window: int) -> int | None:
        key = f"{self.prefix}{identity}:{window}"
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, WINDOW_SECONDS * 2)  # outlives its window a little, whatever the clocks say
                number, _ = await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            logger.warning("rate_limit_store_unavailable")
            return None
        return int(number)


def build_request_counter(settings: RedisSettings, redis: Redis | None) -> RequestCounter:
    """Counters in Redis (`redis`, the app's client) when there is one, else in this process."""
    return MemoryCounter() if redis is None else RedisCounter(redis, settings.namespace)


def rate_limit_identity(scope: Scope) -> str:
    """Requests are counted per token (by its hash), or per client address when they carry none."""
    request: Request[Any, Any, Any] = Request(scope)
    token = token_of(request)
    return f"token:{hash_token(token)[:32]}" if token else f"address:{get_remote_address(request)}"


def limit_headers(limit: int, number: int, reset: int) -> dict[str, str]:
    """The IETF draft's RateLimit headers, as Litestar's middleware sent them."""
    return {
        "RateLimit-Policy": f"{limit}; w={WINDOW_SECONDS}",
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(limit - number, 0)),
        "RateLimit-Reset": str(reset),
    }


def _not_limited(scope: Scope) -> bool:
    """Health checks and the API docs are never limited."""
    return scope["path"].startswith(("/health", DOCS_PREFIX))


class RateLimitMiddleware(ASGIMiddleware):
    """At most `rate_limit_per_minute` HTTP requests a minute per token; more get a 429 with `Retry-After`."""

    scopes = (ScopeType.HTTP,)  # as Litestar's: a WebSocket is one connection, however long it lasts
    should_bypass_for_scope = staticmethod(_not_limited)

    def __init__(self, settings: ServerSettings, counter: RequestCounter) -> None:
        self.limit = settings.rate_limit_per_minute
        self.counter = counter

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        number = await self.counter.count(rate_limit_identity(scope), window)
        if number is None:  # not counted (Redis away): not limited
            await next_app(scope, receive, send)
            return
        headers = limit_headers(self.limit, number, max(1, (window + 1) * WINDOW_SECONDS - int(now)))
        if number > self.limit:
            raise TooManyRequestsException(headers=headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    *((name.lower().encode(), value.encode()) for name, value in headers.items()),
                ]
            await send(message)

        await next_app(scope, receive, send_with_headers)

"""Requests per minute per token, and failed authentications per minute per client address: a
fixed one-minute window, counted in Redis when there is one.

Only authenticated identities are counted against the request limit: a request is counted once its
token is known to be valid (`app.tokens.auth` calls `RateLimiter.count`), so that made-up tokens
cannot each open a counter of their own. A request that fails authentication (no token, an unknown
or revoked one) is counted against its client address (`failed`); past the limit, the address gets
429s for the rest of the window without its tokens being looked up at all. The client address is
the TCP peer, or what a trusted proxy says (`BOTARMY_TRUSTED_PROXIES`, given to uvicorn: forwarded
headers from anyone else are ignored). IPv6 addresses are counted per /64, which one client holds.

Not Litestar's `RateLimitMiddleware`: it keeps every request's timestamp of the window as one JSON
list per token, which each request reads and writes back whole (two Redis round trips and a list as
long as the limit), under one lock for the whole process, so that every request waited for the
others' round trips; and its read-then-write lost counts between two api instances. Here a request
is one atomic script call (one round trip, whatever the limit): a field of a window's hash is
incremented, so that Redis holds one key per window and table however many clients there are, and
a hash already holding `MAX_IDENTITIES` fields counts any new one under a shared overflow field.
Tokens and failing addresses are two tables (`Table`): addresses anyone can make up (a /48 holds
65,536 /64s) fill only their own, so that a valid token always has a field of its own and is never
limited by an overflow it shares with attackers. The embedded default keeps the same in dicts.
The same round trip reads the generation of token revocations (`app.tokens.cache`), so that a
token check served from a process's cache still learns at once that a token was revoked, without a
round trip of its own. The responses keep the same headers (`RateLimit-*`, and `Retry-After` on a
429, see `app.core.exceptions`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, cast

import structlog
from litestar.exceptions import TooManyRequestsException
from litestar.types import Message, Scope
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.config import RedisSettings, ServerSettings

logger = structlog.get_logger(__name__)

WINDOW_SECONDS = 60
# Fields of one window's table of counters (identities) at most; any further one shares `OVERFLOW`.
MAX_IDENTITIES = 50_000
OVERFLOW = "overflow"
# Where the authentication middleware (which counts) leaves the limiter for the streams (which count
# each WebSocket message), and the headers of the request's count for `add_rate_limit_headers`.
LIMITER_KEY = "botarmy.rate_limiter"
HEADERS_KEY = "botarmy.rate_limit_headers"

# Where the generation of token revocations is kept (`app.tokens.cache`), under the namespace.
REVOCATIONS_KEY = ":tokens:revocations"
# Read when the key is missing (never set, or Redis restarted empty): differs from every generation.
NO_REVOCATIONS = "-"

# Many counts in one call: for each i, increment field ARGV[5 + i] of window hash KEYS[i] (or the
# overflow field when the hash is full) and keep the hash a little longer than its window; answer
# the counts, then the revocations' generation (the last key).
_COUNT_SCRIPT = """
local ttl, most, overflow = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local answer = {}
for i = 1, #KEYS - 1 do
  local key, field = KEYS[i], ARGV[4 + i]
  if redis.call('HEXISTS', key, field) == 0 and redis.call('HLEN', key) >= most then
    field = overflow
  end
  answer[i] = redis.call('HINCRBY', key, field, 1)
  redis.call('EXPIRE', key, ttl)
end
answer[#KEYS] = redis.call('GET', KEYS[#KEYS]) or ARGV[4]
return answer
"""
# Counts sent in one script call at most (a burst beyond it takes more calls).
MAX_BATCH = 200


class Table(StrEnum):
    """The kinds of identity counted, each in a bounded table of its own."""

    TOKENS = "tokens"  # authenticated requests, per token (made only by admins)
    ADDRESSES = "addresses"  # failed authentications, per client address (anyone's)


class Count(NamedTuple):
    number: int  # this request's number in its identity's window, 1 for the first
    # The generation of token revocations read with it; None where no store is shared.
    revocations: str | None = None


class RequestCounter(Protocol):
    async def count(self, table: Table, identity: str, window: int) -> Count | None:
        """This request's count in `identity`'s `window`, in its `table`; None: not counted."""


class MemoryCounter:
    """The embedded default's counters: one process, so a dict per table of the current window's counts.

    `revocations`, where given, reads the generation of token revocations that a count answers with
    (`app.tokens.cache`: a file beside the SQLite database).
    """

    def __init__(self, max_identities: int = MAX_IDENTITIES, revocations: Callable[[], str] | None = None) -> None:
        self._window = -1
        self._counts: dict[Table, dict[str, int]] = {}
        self.max_identities = max_identities
        self.revocations = revocations

    async def count(self, table: Table, identity: str, window: int) -> Count | None:
        if window != self._window:  # a new minute: the old counts are of no use any more
            self._window, self._counts = window, {}
        counts = self._counts.setdefault(table, {})
        if identity not in counts and len(counts) >= self.max_identities:
            identity = OVERFLOW
        number = counts.get(identity, 0) + 1
        counts[identity] = number
        return Count(number, None if self.revocations is None else self.revocations())


class RedisCounter:
    """Counters shared by every api instance, so that a token's limit holds across them.

    The counts asked for while the event loop runs its ready callbacks go to Redis together, in one
    script call (`_COUNT_SCRIPT`): under load, one round trip and one reply to parse for a burst of
    requests rather than for each (the rate limit's share of a read's CPU went from 9 % to 3 %); a lone
    request waits for one loop iteration more.

    While Redis is unreachable the limit is not enforced (fails open): refusing every request
    because a safeguard's counter is away would turn a Redis outage into a full API outage.
    Work that really needs Redis (the queue) still answers 503.
    """

    def __init__(self, redis: Redis, namespace: str, max_identities: int = MAX_IDENTITIES) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:ratelimit:"
        self.revocations_key = f"{namespace}{REVOCATIONS_KEY}"
        self.max_identities = max_identities
        self.script = redis.register_script(_COUNT_SCRIPT)
        self._waiting: list[tuple[str, str, asyncio.Future[Count | None]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def count(self, table: Table, identity: str, window: int) -> Count | None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Count | None] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._send_waiting)
        self._waiting.append((f"{self.prefix}{table}:{window}", identity, answer))
        return await answer

    def _send_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), MAX_BATCH):
            task = asyncio.create_task(self._send(waiting[start : start + MAX_BATCH]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[str, str, asyncio.Future[Count | None]]]) -> None:
        keys = [key for key, _, _ in batch] + [self.revocations_key]
        # The window's hash outlives its window a little, whatever the clocks say.
        args: list[str | int] = [WINDOW_SECONDS * 2, self.max_identities, OVERFLOW, NO_REVOCATIONS]
        args += [identity for _, identity, _ in batch]
        try:
            *numbers, revocations = await self.script(keys=keys, args=args)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            logger.warning("rate_limit_store_unavailable", requests=len(batch))
            numbers, revocations = [None] * len(batch), None
        except asyncio.CancelledError:
            for _, _, answer in batch:
                answer.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting request learns of it, not only this task
            for _, _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        generation = revocations.decode() if isinstance(revocations, bytes) else str(revocations)
        for (_, _, answer), number in zip(batch, numbers, strict=True):
            if not answer.done():  # its request may have gone (the client disconnected)
                answer.set_result(None if number is None else Count(int(number), generation))


def build_request_counter(
    settings: RedisSettings, redis: Redis | None, revocations: Callable[[], str] | None = None
) -> RequestCounter:
    """Counters in Redis (`redis`, the app's client) when there is one, else in this process
    (with `revocations`, the reader of the generation of revocations where there is one)."""
    return MemoryCounter(revocations=revocations) if redis is None else RedisCounter(redis, settings.namespace)


def client_address(scope: Scope) -> str:
    """The client's address as counted: an IPv6 address by its /64."""
    client = scope.get("client")
    host = client[0] if client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else str(address)


def limit_headers(limit: int, number: int, reset: int) -> dict[str, str]:
    """The IETF draft's RateLimit headers, as Litestar's middleware sent them."""
    return {
        "RateLimit-Policy": f"{limit}; w={WINDOW_SECONDS}",
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(limit - number, 0)),
        "RateLimit-Reset": str(reset),
    }


class AuthFailuresExceeded(TooManyRequestsException):
    """Too many failed authentications from one address: a 429 whose detail says so."""

    counts_failures = True


class RateLimiter:
    def __init__(self, settings: ServerSettings, counter: RequestCounter, max_blocked: int = MAX_IDENTITIES) -> None:
        self.limit = settings.rate_limit_per_minute
        self.failure_limit = settings.auth_failures_per_minute
        self.counter = counter
        # Addresses past their failure limit in this process, with their window: refused without
        # a lookup. Cleared every window, and bounded.
        self._blocked: dict[str, int] = {}
        self._blocked_window = -1
        self.max_blocked = max_blocked

    @staticmethod
    def _window() -> tuple[int, int]:
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        return window, max(1, (window + 1) * WINDOW_SECONDS - int(now))

    def _failure_error(self, number: int, reset: int) -> AuthFailuresExceeded:
        headers = limit_headers(self.failure_limit, number, reset)
        return AuthFailuresExceeded(
            detail=f"Too many failed authentications from this address: at most {self.failure_limit} a minute; "
            f"retry in {reset} s.",
            headers=headers,
        )

    def check_address(self, scope: Scope) -> None:
        """429 for an address that failed too often in this window (no lookup, no round trip)."""
        if not self._blocked:
            return
        window, reset = self._window()
        if window != self._blocked_window:
            self._blocked, self._blocked_window = {}, window
            return
        if client_address(scope) in self._blocked:
            raise self._failure_error(self.failure_limit + 1, reset)

    async def failed(self, scope: Scope) -> None:
        """Count a failed authentication of the request's address; 429 once past the limit."""
        window, reset = self._window()
        address = client_address(scope)
        counted = await self.counter.count(Table.ADDRESSES, address, window)
        if counted is None or counted.number <= self.failure_limit:
            return
        number = counted.number
        if window != self._blocked_window:
            self._blocked, self._blocked_window = {}, window
        if len(self._blocked) < self.max_blocked:
            self._blocked[address] = window
        raise self._failure_error(number, reset)

    async def count(self, scope: Scope, token_id: Any) -> str | None:
        """Count an authenticated request against its token; 429 once past the limit. Returns the
        generation of token revocations read meanwhile (None: no shared store, or it is away)."""
        window, reset = self._window()
        counted = await self.counter.count(Table.TOKENS, str(token_id), window)
        if counted is None:  # not counted (Redis away): not limited
            return None
        headers = limit_headers(self.limit, counted.number, reset)
        if counted.number > self.limit:
            raise TooManyRequestsException(headers=headers)
        cast(dict[str, Any], scope)[HEADERS_KEY] = headers
        return counted.revocations


def rate_limiter_of(scope: Scope) -> RateLimiter | None:
    """The limiter the authentication middleware left in the scope (`app.tokens.auth`)."""
    limiter = cast(dict[str, Any], scope).get(LIMITER_KEY)
    return limiter if isinstance(limiter, RateLimiter) else None


async def add_rate_limit_headers(message: Message, scope: Scope) -> None:
    """The before-send hook that puts a counted request's `RateLimit-*` headers on its response."""
    headers = cast(dict[str, Any], scope).get(HEADERS_KEY)
    if message["type"] != "http.response.start" or not headers:
        return
    start: dict[str, Any] = message  # type: ignore[assignment]
    start["headers"] = [
        *start.get("headers", ()),
        *((name.lower().encode(), value.encode()) for name, value in headers.items()),
    ]

"""Token checks without a database round trip per request, and revocation still at once everywhere.

An api process keeps the principals of the tokens it checked recently (by the SHA-256 of the
secret, never the secret). A cached principal is trusted only while the **generation of
revocations** in Redis is the one the cache was filled under: every revocation (API or CLI) sets
a new random generation, and every request reads the current one in the same Redis round trip as
its rate-limit count (`app.core.ratelimit`). A process that reads a generation it has not seen
drops its whole cache and checks the token against the database again. So a revoked token is
refused by every api process from the first request after the revocation answered, and nothing
waits for a message to travel.

- The generation is set before the database commit (if Redis cannot be reached, nothing is
  revoked: the caller gets a 503 and may retry) and again after it (processes that reloaded the
  token between the two saw it still valid).
- A missing generation (Redis restarted empty) reads as `NO_REVOCATIONS`, which no cache was
  filled under; Redis away (no count): the cache is dropped and the database asked.
- An entry stored from a database read counts only if the generation was already known before
  that read began (a revocation committed after the read sets a newer one).
- Without Redis (the embedded default, where the CLI may revoke from another process) nothing is
  cached: each request asks the database, as before.
- Entries also expire after `TTL_SECONDS`, so that `last_used_at` keeps being refreshed.
"""

from __future__ import annotations

import time
import uuid

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.config import RedisSettings
from app.core.exceptions import ServiceUnavailableError
from app.core.ratelimit import REVOCATIONS_KEY
from app.core.security import Principal

logger = structlog.get_logger(__name__)

TTL_SECONDS = 60.0
MAX_ENTRIES = 10_000


class TokenCache:
    """One api process's recently checked tokens, valid under one generation of revocations."""

    def __init__(self, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.generation: str | None = None  # None: not known yet, nothing is trusted
        self._entries: dict[str, tuple[Principal, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token_hash: str) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        principal, expires = entry
        if time.monotonic() >= expires:
            del self._entries[token_hash]
            return None
        return principal

    def store(self, token_hash: str, principal: Principal, known_before: str | None) -> None:
        """Keep a principal read from the database; `known_before`: the generation before the read."""
        if known_before is None or known_before != self.generation:
            return  # the generation moved meanwhile (or was never known): not trusted
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[token_hash] = (principal, time.monotonic() + self.ttl)

    def confirm(self, generation: str | None) -> bool:
        """The generation just read from Redis (None: none read). False, and the cache emptied,
        unless it is the one the cache was filled under."""
        if generation is not None and generation == self.generation:
            return True
        self._entries.clear()
        self.generation = generation
        return False

    def forget(self, token_id: uuid.UUID) -> None:
        """Drop a token's entries (its revocation heard of in this process)."""
        for token_hash in [h for h, (principal, _) in self._entries.items() if principal.token_id == token_id]:
            del self._entries[token_hash]


def revocations_key(settings: RedisSettings) -> str:
    return f"{settings.namespace}{REVOCATIONS_KEY}"


class RevocationNotice:
    """Sets a new generation of revocations in Redis: every api process's cache is dropped at its
    next request. A no-op without Redis (nothing is cached there)."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings

    async def announce(self) -> None:
        if self.settings.url is None:
            return
        # Revocations are rare: a connection of its own, closed at once.
        redis = Redis.from_url(self.settings.url, socket_connect_timeout=3, socket_timeout=5)
        try:
            await redis.set(revocations_key(self.settings), uuid.uuid4().hex)
        except RedisError as exc:
            # Refused, not half done: the revocation's transaction has not committed. Said as what it
            # is, not as an unreachable database (which is what the command's users were told).
            raise ServiceUnavailableError(
                f"Redis is unreachable ({type(exc).__name__}): the api processes could not be told, so "
                "nothing was revoked; check REDIS_URL and try again",
                extra={"component": "redis"},
            ) from exc
        finally:
            await redis.aclose()

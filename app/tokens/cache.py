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
- Without Redis, on SQLite (the embedded default, where the CLI may revoke from another process on
  the same machine), the generation is a file beside the database (`revocations_file`): each
  revocation replaces it, and each request reads its identity (inode and modification time, one
  `stat`) with its rate-limit count. Without Redis on any other database nothing is cached: each
  request asks the database.
- Entries also expire after `TTL_SECONDS`, so that `last_used_at` keeps being refreshed.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.config import RedisSettings, Settings
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


def revocations_file(settings: Settings) -> Path | None:
    """Where the generation of revocations is kept without Redis: beside a SQLite database file
    (every process that can open the database can see it); None where there is no such place."""
    if settings.redis.url is not None or not settings.db.sqlite_file or settings.db.sqlite_file == ":memory:":
        return None
    return Path(f"{settings.db.sqlite_file}-revocations")


def file_generation(path: Path) -> Callable[[], str]:
    """A reader of the generation kept in `path`: the file's identity, which every replacement changes."""

    def read() -> str:
        try:
            found = os.stat(path)
        except FileNotFoundError:
            return "none"  # never revoked here: a generation like any other
        return f"{found.st_ino}:{found.st_mtime_ns}:{found.st_size}"

    return read


def _replace_generation(path: Path) -> None:
    # A new file (a new inode) each time, in place at once: a reader never sees a half-written one.
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as new:
        new.write(uuid.uuid4().hex)
    os.replace(new.name, path)


class RevocationNotice:
    """Sets a new generation of revocations, in Redis or in the embedded default's file: every api
    process's cache is dropped at its next request. A no-op where nothing is cached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.redis
        self.file = revocations_file(settings)

    async def announce(self) -> None:
        if self.file is not None:
            try:
                await asyncio.to_thread(_replace_generation, self.file)
            except OSError as exc:
                raise ServiceUnavailableError(
                    f"The file of token revocations {self.file} cannot be written ({exc.strerror}): the api "
                    "could not be told, so nothing was revoked",
                    extra={"component": "database"},
                ) from exc
            return
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

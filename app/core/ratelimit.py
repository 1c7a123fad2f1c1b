"""Requests per minute per token: Litestar's rate-limit middleware, counters in Redis when there is one."""

from __future__ import annotations

import datetime
from typing import Any

import structlog
from litestar import Request
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.config import RedisSettings, ServerSettings
from app.core.headers import DOCS_PREFIX
from app.core.security import hash_token, token_of

RATE_LIMIT_STORE = "rate_limit"
logger = structlog.get_logger(__name__)


def build_rate_limit(settings: ServerSettings) -> RateLimitConfig:
    return RateLimitConfig(
        rate_limit=("minute", settings.rate_limit_per_minute),
        identifier_for_request=rate_limit_identity,
        exclude=[r"^/health", rf"^{DOCS_PREFIX}"],
        store=RATE_LIMIT_STORE,
    )


def rate_limit_identity(request: Request[Any, Any, Any]) -> str:
    """Requests are counted per token (by its hash), or per client address when they carry none."""
    token = token_of(request)
    return f"token:{hash_token(token)[:32]}" if token else f"address:{get_remote_address(request)}"


class RateLimitRedisStore(RedisStore):
    """The rate-limit counters, shared by every api instance so that a token's limit holds across them.

    While Redis is unreachable the limit is not enforced (fails open): refusing every request
    because a safeguard's counter is away would turn a Redis outage into a full API outage.
    Work that really needs Redis (the queue) still answers 503.
    """

    async def get(self, key: str, renew_for: int | datetime.timedelta | None = None) -> bytes | None:
        try:
            return await super().get(key, renew_for)
        except (RedisConnectionError, RedisTimeoutError):
            logger.warning("rate_limit_store_unavailable")
            return None

    async def set(self, key: str, value: str | bytes, expires_in: int | datetime.timedelta | None = None) -> None:
        try:
            await super().set(key, value, expires_in)
        except (RedisConnectionError, RedisTimeoutError):
            logger.warning("rate_limit_store_unavailable")


def build_rate_limit_store(settings: RedisSettings) -> Store:
    if settings.url is None:
        return MemoryStore()
    return RateLimitRedisStore(
        Redis.from_url(settings.url, socket_connect_timeout=3), namespace=f"{settings.namespace}:ratelimit"
    )

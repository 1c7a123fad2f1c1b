"""The rate limit's tables: failing addresses, however many, never limit a valid token."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from litestar.exceptions import TooManyRequestsException
from litestar.types import Scope
from redis.asyncio import Redis

from app.config import load_settings
from app.core.ratelimit import (
    HEADERS_KEY,
    AuthFailuresExceeded,
    MemoryCounter,
    RateLimiter,
    RedisCounter,
    RequestCounter,
    Table,
)
from tests.conftest import REDIS_TEST_URL

TABLE_SIZE = 10


def scope_from(address: str) -> Scope:
    return cast(Scope, {"type": "http", "path": "/api/v1/projects", "client": (address, 40000)})


@pytest.fixture(params=["memory", "redis"])
async def counter(request: pytest.FixtureRequest) -> AsyncIterator[RequestCounter]:
    if request.param == "memory":
        yield MemoryCounter(max_identities=TABLE_SIZE)
        return
    redis = Redis.from_url(REDIS_TEST_URL)
    namespace = f"test-ratelimit-{uuid.uuid4().hex[:8]}"
    try:
        yield RedisCounter(redis, namespace, max_identities=TABLE_SIZE)
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{namespace}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def test_failing_addresses_never_limit_a_valid_token(counter: RequestCounter) -> None:
    settings = load_settings({"BOTARMY_RATE_LIMIT_PER_MINUTE": "30", "BOTARMY_AUTH_FAILURES_PER_MINUTE": "5"})
    limiter = RateLimiter(settings.server, counter)
    # Forty addresses fail once each: the address table is full after ten, the rest share its
    # overflow counter, which is soon past the failure limit.
    refused = 0
    for n in range(40):
        try:
            await limiter.failed(scope_from(f"10.1.{n}.1"))
        except AuthFailuresExceeded:
            refused += 1
    assert refused == 40 - TABLE_SIZE - 5
    # A new valid token, from an address that never failed, has a count of its own from 1.
    scope = scope_from("192.0.2.7")
    limiter.check_address(scope)
    await limiter.count(scope, uuid.uuid4())
    assert cast(dict[str, Any], scope)[HEADERS_KEY]["RateLimit-Remaining"] == "29"
    # Tokens fill a table of their own (nine fields are left), and its overflow is theirs alone.
    statuses = []
    for _ in range(40):
        try:
            await limiter.count(scope_from("192.0.2.8"), uuid.uuid4())
            statuses.append(200)
        except TooManyRequestsException:
            statuses.append(429)
    assert statuses == [200] * (TABLE_SIZE - 1) + [200] * 30 + [429]


async def test_concurrent_counts_are_each_counted_once(counter: RequestCounter) -> None:
    # Redis gets the counts of a burst in one script call: 300 at once (more than one call's worth)
    # over three tokens and two failing addresses, each answered with its own number.
    asks = [
        (table, identity, window)
        for n in range(300)
        for table, identity, window in [
            (Table.TOKENS, f"token-{n % 3}", 100),
            (Table.ADDRESSES, f"10.0.0.{n % 2}", 100),
        ]
    ]
    counts = await asyncio.gather(*(counter.count(*ask) for ask in asks))
    numbers: dict[tuple[Table, str, int], list[int]] = {}
    for ask, counted in zip(asks, counts, strict=True):
        assert counted is not None
        numbers.setdefault(ask, []).append(counted.number)
    for ask, seen in numbers.items():
        assert sorted(seen) == list(range(1, len(seen) + 1)), ask


async def test_redis_away_counts_nothing_and_refuses_nothing() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1)
    try:
        counter = RedisCounter(redis, "test-ratelimit-away")
        counts = await asyncio.gather(*(counter.count(Table.TOKENS, f"token-{n}", 1) for n in range(5)))
        assert counts == [None] * 5
    finally:
        await redis.aclose()

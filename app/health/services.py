"""Probes of every component the server depends on, each with a timeout and its latency."""

from __future__ import annotations

import asyncio
import time

import msgspec
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

PROBE_TIMEOUT_SECONDS = 3.0


class ComponentHealth(msgspec.Struct):
    name: str
    healthy: bool
    latency_ms: float
    backend: str
    critical: bool
    error: str | None = None


class HealthService:
    def __init__(self, engine: AsyncEngine, redis: Redis | None) -> None:
        self.engine = engine
        self.redis = redis

    async def check_all(self) -> list[ComponentHealth]:
        return list(await asyncio.gather(self.check_database(), self.check_broker(), self.check_channels()))

    async def check_ready(self) -> list[ComponentHealth]:
        return list(await asyncio.gather(self.check_database(), self.check_broker()))

    async def check_database(self) -> ComponentHealth:
        async def probe() -> None:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        return await self._probe("database", self.engine.dialect.name, probe, critical=True)

    async def check_broker(self) -> ComponentHealth:
        return await self._redis_probe("broker", critical=True)

    async def check_channels(self) -> ComponentHealth:
        return await self._redis_probe("channels", critical=False)

    async def _redis_probe(self, name: str, *, critical: bool) -> ComponentHealth:
        redis = self.redis
        if redis is None:
            return ComponentHealth(name=name, healthy=True, latency_ms=0.0, backend="in-process", critical=critical)

        async def probe() -> None:
            await redis.ping()

        return await self._probe(name, "redis", probe, critical=critical)

    async def _probe(self, name: str, backend: str, probe: object, *, critical: bool) -> ComponentHealth:
        started = time.perf_counter()
        error: str | None = None
        try:
            await asyncio.wait_for(probe(), PROBE_TIMEOUT_SECONDS)  # type: ignore[operator]
        except TimeoutError:
            error = f"no answer within {PROBE_TIMEOUT_SECONDS:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy; the class name says enough, no secrets
            error = f"unreachable ({type(exc).__name__})"
        latency = round((time.perf_counter() - started) * 1000, 2)
        return ComponentHealth(
            name=name, healthy=error is None, latency_ms=latency, backend=backend, critical=critical, error=error
        )

"""Probes of every component the server depends on, each with a timeout and its latency."""

from __future__ import annotations

import asyncio
import time

import msgspec
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.schema import schema_problem

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
        # Once the schema was found at the head revision it stays there (migrations go forward
        # while servers run): readiness stops asking.
        self._schema_ready = False

    async def check_all(self) -> list[ComponentHealth]:
        checks = (self.check_database(), self.check_schema(), self.check_broker(), self.check_channels())
        return list(await asyncio.gather(*checks))

    async def check_ready(self) -> list[ComponentHealth]:
        return list(await asyncio.gather(self.check_database(), self.check_schema(), self.check_broker()))

    async def check_schema(self) -> ComponentHealth:
        """Is the schema at the head revision (one query, until it is)?"""
        if self._schema_ready:
            return ComponentHealth(name="schema", healthy=True, latency_ms=0.0, backend="alembic", critical=True)
        started = time.perf_counter()
        try:
            error = await asyncio.wait_for(schema_problem(self.engine), PROBE_TIMEOUT_SECONDS)
        except TimeoutError:
            error = "not checked: the database did not answer"
        except Exception as exc:  # noqa: BLE001 - reported, class name only
            error = f"not checked: the database is unreachable ({type(exc).__name__})"
        self._schema_ready = error is None
        latency = round((time.perf_counter() - started) * 1000, 2)
        return ComponentHealth(
            name="schema", healthy=error is None, latency_ms=latency, backend="alembic", critical=True, error=error
        )

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

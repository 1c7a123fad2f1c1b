"""The application factory: the one place that builds the Litestar object."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.channels import ChannelsPlugin
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from redis.asyncio import Redis

from app import __version__
from app.config import Settings, get_settings
from app.core.channels import ChannelsPluginPublisher, build_channels_backend
from app.core.exceptions import exception_handlers, is_unavailable_error
from app.core.logging import configure_logging
from app.core.routes import route_handlers
from app.db.engine import build_db_config, upgrade_database_async
from app.health.services import HealthService
from app.tasks.sweeper import run_sweeper
from app.worker.broker import build_broker
from app.worker.runtime import Runtime

logger = structlog.get_logger("app")


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings.app)
    channels = ChannelsPlugin(backend=build_channels_backend(settings.redis), arbitrary_channels_allowed=True)
    db_config = build_db_config(settings.db, ChannelsPluginPublisher(channels))
    broker = build_broker(settings)
    runtime = Runtime(settings=settings, db_config=db_config, broker=broker)
    redis = Redis.from_url(settings.redis.url, socket_connect_timeout=3) if settings.redis.url else None
    health = HealthService(db_config.get_engine(), redis)

    @contextlib.asynccontextmanager
    async def runtime_lifespan(app: Litestar) -> AsyncIterator[None]:
        if settings.db.is_sqlite:
            # The embedded default keeps its own file at the latest schema; PostgreSQL is
            # migrated explicitly (`botarmy db upgrade`), so that several api instances never race.
            await upgrade_database_async(settings.db)
        broker.state.runtime = runtime  # the in-process broker's jobs use the api's runtime
        try:
            await broker.startup()
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise
            logger.warning("broker_unavailable_at_startup", error=type(exc).__name__)
        sweeper = asyncio.create_task(run_sweeper(runtime)) if not settings.redis.enabled else None
        logger.info("api_started", database=db_config.get_engine().dialect.name, broker=type(broker).__name__)
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            await broker.shutdown()
            if redis is not None:
                await redis.aclose()

    state: dict[str, Any] = {"runtime": runtime, "health": health, "settings": settings}
    return Litestar(
        route_handlers=route_handlers,
        plugins=[SQLAlchemyPlugin(config=db_config), channels],
        lifespan=[runtime_lifespan],
        state=State(state),
        exception_handlers=exception_handlers,
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=OpenAPIConfig(title="BotArmy", version=__version__, path="/schema"),
        debug=False,
    )


def __getattr__(name: str) -> Any:
    # `app.main:app` for ASGI servers, built on first use so that importing this module stays cheap.
    if name == "app":
        return create_app()
    raise AttributeError(name)

"""The application factory: the one place that builds the Litestar object."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator
from typing import Any

import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.channels import ChannelsPlugin
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from redis.asyncio import Redis

from app import __version__
from app.config import Settings, get_settings
from app.console.controllers import console_templates
from app.core.channels import BackendPublisher, build_channels_backend
from app.core.exceptions import exception_handlers, is_unavailable_error
from app.core.headers import DOCS_PREFIX, add_security_headers
from app.core.logging import configure_logging
from app.core.openapi import complete_openapi
from app.core.ratelimit import RateLimitMiddleware, build_request_counter
from app.core.routes import route_handlers
from app.core.security import provide_principal, role_guard
from app.db.engine import build_db_config, upgrade_database_async
from app.events.hub import SERVER_SEND_KEY, LiveHub
from app.events.services import payload_checks
from app.health.services import HealthService
from app.tasks.sweeper import run_sweeper
from app.tokens.auth import TokenAuthenticationMiddleware
from app.tokens.services import TokenService
from app.worker.broker import build_broker
from app.worker.runtime import Runtime

logger = structlog.get_logger("app")


class BotArmy(Litestar):
    """The Litestar app, which also keeps each WebSocket's server `send` in its scope (`SERVER_SEND_KEY`).

    Litestar wraps `send` for its before-send hooks, its exception middleware and its WebSocket
    state; for a WebSocket's data frames all three only pass the message on, yet they were a quarter
    of the api's CPU when one event went out to 1,000 sockets (bench/README.md, `ws_bench`). The
    streams write their live events through the server's own `send`.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND_KEY] = send
        await super().__call__(scope, receive, send)


def create_served_app() -> Litestar:
    """The app as `botarmy serve` runs it: a long-lived process that freezes its start-up heap."""
    return create_app(freeze_startup_heap=True)


def create_app(settings: Settings | None = None, *, freeze_startup_heap: bool = False) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings.app, settings.models.secrets())
    payload_checks.strict = settings.app.env != "production"
    channels_backend = build_channels_backend(settings.redis)
    channels = ChannelsPlugin(backend=channels_backend, arbitrary_channels_allowed=True)
    publisher = BackendPublisher(channels_backend, owns_backend=False)
    db_config = build_db_config(settings.db, publisher)
    broker = build_broker(settings)
    runtime = Runtime(settings=settings, db_config=db_config, broker=broker, publisher=publisher)
    redis = Redis.from_url(settings.redis.url, socket_connect_timeout=3) if settings.redis.url else None
    health = HealthService(db_config.get_engine(), redis)
    request_counter = build_request_counter(settings.redis, redis)

    @contextlib.asynccontextmanager
    async def runtime_lifespan(app: Litestar) -> AsyncIterator[None]:
        if settings.db.is_sqlite:
            # The embedded default keeps its own file at the latest schema; PostgreSQL is
            # migrated explicitly (`botarmy db upgrade`), so that several api instances never race.
            await upgrade_database_async(settings.db)
            await print_bootstrap_admin_token(runtime)
        broker.state.runtime = runtime  # the in-process broker's jobs use the api's runtime
        await publisher.start()
        try:
            await broker.startup()
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise
            logger.warning("broker_unavailable_at_startup", error=type(exc).__name__)
        sweeper = asyncio.create_task(run_sweeper(runtime)) if not settings.redis.enabled else None
        logger.info("api_started", database=db_config.get_engine().dialect.name, broker=type(broker).__name__)
        if freeze_startup_heap:
            # What start-up built (~190k objects: routes, schemas, models) lives as long as the
            # process. Frozen, full collections no longer walk it: they took ~97 ms instead of
            # ~5 ms and stalled every request in flight (bench/README.md). Not in tests, which
            # build many apps in one process and would never free them.
            gc.collect()
            gc.freeze()
            _, older, oldest = gc.get_threshold()
            gc.set_threshold(settings.server.gc_young_threshold, older, oldest)
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            await broker.shutdown()
            await publisher.stop()
            if redis is not None:
                await redis.aclose()

    state: dict[str, Any] = {
        "runtime": runtime,
        "health": health,
        "settings": settings,
        "live_hub": LiveHub(channels),  # the streams' one subscription per channel
    }
    origins = settings.server.cors_origin_list
    app = BotArmy(
        route_handlers=route_handlers,
        plugins=[SQLAlchemyPlugin(config=db_config), channels],
        lifespan=[runtime_lifespan],
        state=State(state),
        exception_handlers=exception_handlers,
        # Outermost first: limit before authenticating, so that guessing tokens is limited too.
        before_send=[add_security_headers],
        middleware=[
            RateLimitMiddleware(settings.server, request_counter),
            DefineMiddleware(TokenAuthenticationMiddleware, exclude=[rf"^{DOCS_PREFIX}"]),
        ],
        guards=[role_guard],
        dependencies={"principal": Provide(provide_principal, sync_to_thread=False)},
        cors_config=CORSConfig(
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"],
            max_age=600,
        )
        if origins
        else None,
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=OpenAPIConfig(title="BotArmy", version=__version__, path=DOCS_PREFIX),
        template_config=console_templates(),
        debug=False,
        logging_config=None,  # ours (app.core.logging): structured, and it redacts secrets
    )
    complete_openapi(app)
    return app


async def print_bootstrap_admin_token(runtime: Runtime) -> None:
    """On the first start of the embedded default, make an admin token and show it, once.

    Written to the terminal, never to the log: logs are kept and shipped, a terminal is not.
    """
    async with runtime.session() as session:
        secret = await TokenService(session=session).bootstrap_admin()
    if secret is not None:
        sys.stdout.write(
            "\nBotArmy admin token (shown once; `botarmy token create --name NAME --role admin` makes another):\n"
            f"{secret}\n\n"
        )
        sys.stdout.flush()


def __getattr__(name: str) -> Any:
    # `app.main:app` for ASGI servers, built on first use so that importing this module stays cheap.
    if name == "app":
        return create_app()
    raise AttributeError(name)

"""The application factory: the one place that builds the Litestar object."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from types import FrameType
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

from app import (
    __version__,
    models,  # noqa: F401 - every mapper, so that foreign keys resolve in any process
)
from app.api.dependencies import provide_value
from app.api.health import LivenessAnswer
from app.api.metrics import start_metrics_server
from app.api.routes import route_handlers
from app.api.transactions import request_session_finisher
from app.config import Settings, get_settings
from app.console.controllers import console_router, console_templates
from app.core.broker import build_broker
from app.core.channels import BackendPublisher, build_channels_backend
from app.core.exceptions import exception_handlers, is_unavailable_error
from app.core.headers import DOCS_PREFIX, add_security_headers
from app.core.instruments import HTTP_METRICS, SharedCounters, websocket_connection
from app.core.logging import configure_logging
from app.core.openapi import docs_router
from app.core.ratelimit import RateLimiter, add_rate_limit_headers, build_request_counter
from app.core.runtime import Runtime
from app.core.security import provide_principal
from app.db.engine import build_db_config, upgrade_database_async
from app.events.hub import SERVER_SEND_KEY, LiveHub
from app.events.limits import StreamLimits
from app.events.services import payload_checks
from app.health.services import HealthService
from app.metrics.services import Scraper
from app.runs.sweeper import run_sweeper
from app.tokens.auth import CLOSE_UNAUTHORIZED, TokenAuthenticationMiddleware
from app.tokens.bootstrap import show_admin_token
from app.tokens.cache import file_generation, revocations_file
from app.tokens.revoked import REVOKED_REASON, TOKEN_REVOKED, RevokedTokens
from app.tokens.services import TokenService

logger = structlog.get_logger("app")


class BotArmy(Litestar):
    """The Litestar app, which answers liveness probes at its door (`LivenessAnswer`) and keeps each
    WebSocket's server `send` in its scope (`SERVER_SEND_KEY`).

    Litestar wraps `send` for its before-send hooks, its exception middleware and its WebSocket
    state; for a WebSocket's data frames all three only pass the message on, yet they were a quarter
    of the api's CPU when one event went out to 1,000 sockets (bench/README.md, `ws_bench`). The
    streams write their live events through the server's own `send`.
    """

    liveness = LivenessAnswer()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if LivenessAnswer.asks(scope):
            await self.liveness(scope, receive, send)
            return
        if scope["type"] == "websocket":
            scope[SERVER_SEND_KEY] = send
            with websocket_connection():
                await super().__call__(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


@contextlib.contextmanager
def say_goodbye_on_signals(hub: LiveHub) -> Iterator[None]:
    """On SIGTERM or SIGINT, close every stream with 1001 (going away) first, then let the server stop.

    uvicorn, on these signals, closes each WebSocket with 1012 (service restart) once its main loop
    notices, up to 0.1 s later. Its handler stays in charge; ours, in front of it, has the hub say
    goodbye in the next turn of the event loop, so that clients reconnect (to another instance,
    with `after`) on the code that says so. Only where a server installed handlers of its own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(signum)
        if not callable(handler) or handler is signal.default_int_handler:
            continue

        def goodbye(
            number: int, frame: FrameType | None, handler: Callable[[int, FrameType | None], Any] = handler
        ) -> None:
            loop.call_soon_threadsafe(hub.going_away)
            handler(number, frame)

        previous[signum] = handler
        signal.signal(signum, goodbye)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
    db_config = build_db_config(settings.db, publisher, session_finisher=request_session_finisher)
    broker = build_broker(settings)
    redis = Redis.from_url(settings.redis.url, socket_connect_timeout=3) if settings.redis.url else None
    counters = SharedCounters(redis, settings.redis.namespace)
    runtime = Runtime(settings=settings, db_config=db_config, broker=broker, publisher=publisher, counters=counters)
    scraper = Scraper(db_config.get_session, redis, settings.redis.namespace, counters)
    health = HealthService(db_config.get_engine(), redis)
    revocations = revocations_file(settings)
    request_counter = build_request_counter(
        settings.redis, redis, revocations=None if revocations is None else file_generation(revocations)
    )
    live_hub = LiveHub(channels, runtime.session)
    # A revoked token's open streams are ended on every api process, each by its own hub.
    revoked_tokens = RevokedTokens()
    live_hub.watch(TOKEN_REVOKED, revoked_tokens.observe)
    revoked_tokens.on_revoked(lambda token_id: live_hub.end_feeds_of(token_id, CLOSE_UNAUTHORIZED, REVOKED_REASON))
    stream_limits = StreamLimits(settings.server.ws_max_connections_per_token, settings.server.ws_max_connections)

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
        metrics_port = settings.server.metrics_port
        metrics_server = (
            await start_metrics_server(scraper, settings.server.metrics_host, metrics_port) if metrics_port else None
        )
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
            with say_goodbye_on_signals(live_hub):
                yield
        finally:
            if metrics_server is not None:
                metrics_server.close()
            live_hub.going_away()  # what is still open (a server that sent no signal first)
            await live_hub.close()
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
        "live_hub": live_hub,  # the streams' one subscription, in id order
        "revoked_tokens": revoked_tokens,
        "stream_limits": stream_limits,
        "metrics": scraper,
    }
    origins = settings.server.cors_origin_list
    app = BotArmy(
        route_handlers=[*route_handlers, console_router],
        plugins=[SQLAlchemyPlugin(config=db_config), channels],
        lifespan=[runtime_lifespan],
        state=State(state),
        exception_handlers=exception_handlers,
        # Outermost first: measure, then limit before authenticating (guessing tokens is limited too).
        before_send=[add_security_headers, add_rate_limit_headers],
        middleware=[
            HTTP_METRICS.middleware,  # outermost: counts and times 401s and 429s too
            DefineMiddleware(
                TokenAuthenticationMiddleware,
                limiter=RateLimiter(settings.server, request_counter),
                exclude=[rf"^{DOCS_PREFIX}"],
            ),
        ],
        dependencies={
            "principal": Provide(provide_principal, sync_to_thread=False),
            "runtime": provide_value(runtime),
            # Not "settings": a dependency must not share its name with a field of a body (a project's `settings`).
            "app_settings": provide_value(settings),
        },
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
        # The document is built when first asked for, not here (app.core.openapi).
        openapi_config=OpenAPIConfig(
            title="BotArmy", version=__version__, path=DOCS_PREFIX, openapi_router=docs_router(DOCS_PREFIX)
        ),
        template_config=console_templates(),
        debug=False,
        logging_config=None,  # ours (app.core.logging): structured, and it redacts secrets
    )
    return app


async def print_bootstrap_admin_token(runtime: Runtime) -> None:
    """On the first start of the embedded default, make an admin token and show it, once.

    On a terminal only, never in the log: logs are kept and shipped, a terminal is not. Where the
    output is not a terminal (captured by a service manager) it goes to an owner-only file instead.
    """
    async with runtime.session() as session:
        secret = await TokenService(session=session).bootstrap_admin()
    if secret is not None:
        show_admin_token(secret, runtime.settings.app.data_dir)


def __getattr__(name: str) -> Any:
    # `app.main:app` for ASGI servers, built on first use so that importing this module stays cheap.
    if name == "app":
        return create_app()
    raise AttributeError(name)

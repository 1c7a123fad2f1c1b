"""What one process measures as it goes, and the counters every process adds to.

- HTTP requests: Litestar's Prometheus metrics (`HttpMetricsMiddleware`), labelled by route template
  (never the raw path, whose ids would make a series per resource).
- WebSocket connections: a gauge the app raises and lowers around each WebSocket connection.
- Events published: `count_published`, called by the outbox after each commit's publish (an api's
  own; a worker's are counted in `botarmy_events_stored_total`, read from the event table).
- Shared counters (lease expiries, tasks handed back): the workers count these, but an api serves
  `/metrics`; in services mode they live in a Redis hash, on the embedded default in this process.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator
from typing import Any, cast

import structlog
from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, disable_created_metrics
from redis.asyncio import Redis

from app.core.exceptions import is_unavailable_error

logger = structlog.get_logger(__name__)

PREFIX = "botarmy"
# No `_created` series beside every counter and histogram: they doubled the text for nothing we use.
disable_created_metrics()  # type: ignore[no-untyped-call]


class HttpMetricsMiddleware(PrometheusMiddleware):
    """Litestar's Prometheus middleware, the same metrics and labels, with its labelled series kept.

    The parent builds a `Request`, a dict of labels, a `functools.wraps` wrapper of `send` and looks
    up four labelled series on every request (5 % of a status read's CPU); here the series of a
    (method, route, status) are looked up once and kept (the routes are templates: a bounded set).
    """

    def __init__(self, app: ASGIApp, config: PrometheusConfig) -> None:
        super().__init__(app, config)
        self._in_progress: dict[tuple[str, str], Any] = {}
        self._finished: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def _labels(self, method: str, path: str, status: int) -> dict[str, str | int | float]:
        return {"method": method, "path": path, "status_code": status, "app_name": self._config.app_name}

    def _in_progress_of(self, method: str, path: str) -> Any:
        series = self._in_progress.get((method, path))
        if series is None:
            labels = self._labels(method, path, 200)
            series = self._in_progress[method, path] = self.requests_in_progress(labels).labels(*labels.values())
        return series

    def _finished_of(self, method: str, path: str, status: int) -> tuple[Any, Any, Any]:
        series = self._finished.get((method, path, status))
        if series is None:
            labels = self._labels(method, path, status)
            values = [*labels.values()]
            errors = self.requests_error_count(labels).labels(*values) if status >= 500 else None
            series = (self.request_count(labels).labels(*values), self.request_time(labels).labels(*values), errors)
            self._finished[method, path, status] = series
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = cast(str, scope.get("method")), scope["path_template"]  # HTTP only (`scopes`)
        started = time.perf_counter()
        span = [200, 0.0]  # status, duration

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                span[0] = message["status"]
            elif message["type"] == "http.response.body":
                span[1] = time.perf_counter() - started
            await send(message)

        in_progress = self._in_progress_of(method, path)
        in_progress.inc()
        try:
            await self.app(scope, receive, send_timed)
        finally:
            in_progress.dec()
            count, duration, errors = self._finished_of(method, path, int(span[0]))
            if errors is not None:
                errors.inc()
            count.inc()
            duration.observe(span[1])


HTTP_METRICS = PrometheusConfig(
    app_name=PREFIX,
    prefix=PREFIX,
    group_path=True,  # the route template: /api/v1/projects/{project_id}
    scopes={ScopeType.HTTP},  # a WebSocket is a connection, not a request: see WEBSOCKETS
    exclude=[r"^/metrics$"],
    middleware_class=HttpMetricsMiddleware,
)

WEBSOCKETS = Gauge(f"{PREFIX}_websocket_connections", "WebSocket connections open on this process")
EVENTS_PUBLISHED = Counter(f"{PREFIX}_events_published", "Events this process published to live streams")


@contextlib.contextmanager
def websocket_connection() -> Iterator[None]:
    WEBSOCKETS.inc()
    try:
        yield
    finally:
        WEBSOCKETS.dec()


def count_published(events: int = 1) -> None:
    """Called by the code that publishes stored events to the live streams."""
    EVENTS_PUBLISHED.inc(events)


# The shared counters, by name: what each one counts.
SHARED_COUNTERS = {
    "lease_expiries": "Attempts whose worker stopped renewing its lease, found and requeued by the sweep",
    "tasks_handed_back": "Attempts a stopping worker handed back unfinished (queued again at once)",
}
_local = collections.Counter[str]()


class SharedCounters:
    """Counters any process adds to and the api reads: a Redis hash, or this process's memory."""

    def __init__(self, redis: Redis | None = None, namespace: str = PREFIX) -> None:
        self.redis = redis
        self.key = f"{namespace}:metrics"

    async def add(self, name: str, amount: int = 1) -> None:
        if amount <= 0:
            return
        if self.redis is None:
            _local[name] += amount
            return
        try:
            await self.redis.hincrby(self.key, name, amount)
        except Exception as exc:  # a figure is not worth failing the work it counts
            if not is_unavailable_error(exc):
                raise
            logger.warning("metric_not_counted", counter=name, reason=type(exc).__name__)

    async def read(self) -> dict[str, int]:
        if self.redis is None:
            return {name: _local[name] for name in SHARED_COUNTERS}
        stored = await self.redis.hgetall(self.key)
        values = {(key.decode() if isinstance(key, bytes) else key): int(value) for key, value in stored.items()}
        return {name: values.get(name, 0) for name in SHARED_COUNTERS}

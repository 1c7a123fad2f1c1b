"""What one process measures as it goes, and the counters every process adds to.

- HTTP requests: Litestar's Prometheus middleware, labelled by route template (never the raw
  path, whose ids would make a series per resource).
- WebSocket connections: a gauge the app raises and lowers around each WebSocket connection.
- Events published: `count_published`, called by the outbox after each commit's publish (an api's
  own; a worker's are counted in `botarmy_events_stored_total`, read from the event table).
- Shared counters (lease expiries, tasks handed back): the workers count these, but an api serves
  `/metrics`; in services mode they live in a Redis hash, on the embedded default in this process.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator

import structlog
from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import Counter, Gauge, disable_created_metrics
from redis.asyncio import Redis

from app.core.exceptions import is_unavailable_error

logger = structlog.get_logger(__name__)

PREFIX = "botarmy"
# No `_created` series beside every counter and histogram: they doubled the text for nothing we use.
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_METRICS = PrometheusConfig(
    app_name=PREFIX,
    prefix=PREFIX,
    group_path=True,  # the route template: /api/v1/projects/{project_id}
    scopes={ScopeType.HTTP},  # a WebSocket is a connection, not a request: see WEBSOCKETS
    exclude=[r"^/metrics$"],
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

"""`/metrics`: this process's instruments, and figures read at scrape time from the database and Redis.

What the workers do lands in the database (tasks, model calls, HITL requests, events) or in the
shared counters, so any api process can report it: a worker process has no port to scrape. Each
figure is one cheap aggregate query; the whole scrape is a handful of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.models import LlmUsage
from app.core.exceptions import is_unavailable_error
from app.core.instruments import PREFIX, SHARED_COUNTERS, SharedCounters
from app.events.models import Event
from app.hitl.models import HitlRequest, HitlStatus
from app.tasks.models import AgentTask, TaskStatus

logger = structlog.get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Figures(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def database_figures(session: AsyncSession) -> list[Metric]:
    tasks = GaugeMetricFamily(f"{PREFIX}_tasks", "Agent tasks by status", labels=["status"])
    counts = dict(
        (await session.execute(select(AgentTask.status, func.count()).group_by(AgentTask.status))).tuples().all()
    )
    for status in TaskStatus:
        tasks.add_metric([status.value], counts.get(status.value, 0))
    depth = GaugeMetricFamily(
        f"{PREFIX}_queue_depth", "Tasks waiting for a worker (pending or queued)", labels=["status"]
    )
    for status in (TaskStatus.PENDING, TaskStatus.QUEUED):
        depth.add_metric([status.value], counts.get(status.value, 0))

    calls = CounterMetricFamily(
        f"{PREFIX}_model_calls", "Model calls, by provider and outcome", labels=["provider", "outcome"]
    )
    tokens = CounterMetricFamily(
        f"{PREFIX}_model_tokens", "Model tokens, by provider and direction", labels=["provider", "direction"]
    )
    cost = CounterMetricFamily(
        f"{PREFIX}_model_cost_usd", "Estimated model cost in USD, by provider", labels=["provider"]
    )
    usage = select(
        LlmUsage.provider,
        LlmUsage.outcome,
        func.count(),
        func.coalesce(func.sum(LlmUsage.tokens_in), 0),
        func.coalesce(func.sum(LlmUsage.tokens_out), 0),
        func.coalesce(func.sum(LlmUsage.cost_usd), 0.0),
    ).group_by(LlmUsage.provider, LlmUsage.outcome)
    by_provider: dict[str, list[float]] = {}
    for provider, outcome, count, tokens_in, tokens_out, cost_usd in (await session.execute(usage)).tuples():
        calls.add_metric([provider, outcome], count)
        totals = by_provider.setdefault(provider, [0.0, 0.0, 0.0])
        totals[0] += tokens_in
        totals[1] += tokens_out
        totals[2] += cost_usd
    for provider, (sum_in, sum_out, sum_cost) in sorted(by_provider.items()):
        tokens.add_metric([provider, "in"], sum_in)
        tokens.add_metric([provider, "out"], sum_out)
        cost.add_metric([provider], sum_cost)

    pending = await session.scalar(
        select(func.count()).select_from(HitlRequest).where(HitlRequest.status == HitlStatus.PENDING.value)
    )
    hitl = GaugeMetricFamily(f"{PREFIX}_hitl_requests_pending", "HITL requests waiting for a human")
    hitl.add_metric([], pending or 0)

    last_id = await session.scalar(select(func.max(Event.id)))
    events = CounterMetricFamily(
        f"{PREFIX}_events_stored", "Events written to the event log (its highest id; a rolled-back write skips one)"
    )
    events.add_metric([], last_id or 0)
    await session.commit()
    return [tasks, depth, calls, tokens, cost, hitl, events]


async def broker_figures(redis: Redis | None, namespace: str) -> list[Metric]:
    """The job stream's consumer group: messages no worker has read yet, and read but not acknowledged."""
    if redis is None:
        return []
    messages = GaugeMetricFamily(
        f"{PREFIX}_broker_messages", "Job messages in the Redis stream, by state", labels=["state"]
    )
    try:
        groups = await redis.xinfo_groups(f"{namespace}:jobs")
    except ResponseError:  # no job was ever queued: the stream does not exist yet
        groups = []
    group = next((g for g in groups if _text(g.get("name")) == f"{namespace}:workers"), None)
    messages.add_metric(["unread"], int((group or {}).get("lag") or 0))
    messages.add_metric(["unacknowledged"], int((group or {}).get("pending") or 0))
    return [messages]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def shared_figures(counters: SharedCounters) -> list[Metric]:
    values = await counters.read()
    families: list[Metric] = []
    for name, documentation in SHARED_COUNTERS.items():
        family = CounterMetricFamily(f"{PREFIX}_{name}", documentation)
        family.add_metric([], values.get(name, 0))
        families.append(family)
    return families


class Scraper:
    """Renders `/metrics` for the api route and for the separate metrics port alike."""

    def __init__(
        self,
        session: Callable[[], AbstractAsyncContextManager[AsyncSession]],
        redis: Redis | None,
        namespace: str,
        counters: SharedCounters,
    ) -> None:
        self.session = session
        self.redis = redis
        self.namespace = namespace
        self.counters = counters

    async def render(self) -> bytes:
        """The exposition text: this process's instruments, then the figures read now.

        The database's figures are required (a scrape fails with 503 while it is away); Redis's
        are left out while Redis is away, so that the rest still arrives.
        """
        async with self.session() as session:
            families = await database_figures(session)
        try:
            families += await broker_figures(self.redis, self.namespace)
            families += await shared_figures(self.counters)
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise
            logger.warning("metrics_without_redis", reason=type(exc).__name__)
        scraped = CollectorRegistry(auto_describe=False)
        scraped.register(_Figures(families))
        return generate_latest(REGISTRY) + generate_latest(scraped)

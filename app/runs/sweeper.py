"""The periodic sweep: bring back tasks whose worker died, enqueue tasks the broker missed."""

from __future__ import annotations

import asyncio
import datetime
import time

import structlog
from sqlalchemy import select

from app.agents.models import AgentState
from app.core.exceptions import is_unavailable_error
from app.core.runtime import Runtime
from app.hitl.models import HitlRequest, HitlStatus
from app.runs.control import park_interrupted
from app.runs.decisions import DecisionService
from app.runs.jobs import agent_task_enqueuer
from app.runs.outcome import AttemptOutcome, ErrorNotice, on_attempt_outcome
from app.runs.provider import services
from app.runs.retention import purge_artifacts
from app.tasks.services import LEASE_EXPIRED, dispatch_all

logger = structlog.get_logger(__name__)


async def sweep_once(runtime: Runtime) -> int:
    worker = runtime.settings.worker
    async with runtime.session() as session:
        for task in await services(session).tasks.fail_timed_out():
            logger.warning("task_timed_out", task_id=str(task.id), timeout_s=task.timeout_seconds)
            await on_attempt_outcome(
                session,
                runtime.settings,
                task,
                AttemptOutcome(
                    agent_state=AgentState.ERROR,
                    notice=ErrorNotice(message=task.error or "timed out", code="timed_out"),
                    agent_names_task=False,
                ),
            )
            await session.commit()
        await park_interrupted(session, runtime.settings, grace_seconds=worker.lease_seconds)
    await expire_hitl_requests(runtime)
    async with runtime.session() as session:
        requeued = await services(session).tasks.sweep_by_reason(
            agent_task_enqueuer(runtime.broker),
            pending_after=worker.pending_requeue_seconds,
            queued_after=worker.queued_requeue_seconds,
        )
    await runtime.counters.add("lease_expiries", requeued[LEASE_EXPIRED])
    dispatched = sum(requeued.values())
    if dispatched:
        logger.info("sweep_requeued", tasks=dispatched)
    return dispatched


async def expire_hitl_requests(runtime: Runtime) -> int:
    """Warn before HITL requests expire, then expire them and carry out their expiry action."""
    policy = runtime.settings.hitl
    at = datetime.datetime.now(datetime.UTC)
    lead = datetime.timedelta(seconds=policy.warning_seconds)
    pending = HitlRequest.status == HitlStatus.PENDING.value
    expired = 0
    async with runtime.session() as session:
        warn = select(HitlRequest.id).where(
            pending, HitlRequest.warned_at.is_(None), HitlRequest.expires_at > at, HitlRequest.expires_at <= at + lead
        )
        for request_id in list(await session.scalars(warn.order_by(HitlRequest.id).limit(100))):
            await DecisionService(session, policy).warn(request_id)
            await session.commit()
        due = select(HitlRequest.id).where(pending, HitlRequest.expires_at <= at)
        for request_id in list(await session.scalars(due.order_by(HitlRequest.id).limit(100))):
            follow_ups = await DecisionService(session, policy).expire(request_id)
            await session.commit()
            expired += 1
            await dispatch_all(services(session).tasks, follow_ups, agent_task_enqueuer(runtime.broker))
        await session.commit()
    if expired:
        logger.info("hitl_requests_expired", requests=expired)
    return expired


async def purge_old_artifacts(runtime: Runtime) -> int:
    days = runtime.settings.worker.artifact_retention_days
    if days is None:
        return 0
    async with runtime.session() as session:
        purged, kept = await purge_artifacts(services(session).artifacts, days, actor="retention")
        await session.commit()
    if purged or kept:
        logger.info("retention_purge", purged=purged, kept_referenced=kept, older_than_days=days)
    return purged


async def run_sweeper(runtime: Runtime) -> None:
    interval = runtime.settings.worker.sweep_interval_seconds
    retention_every = runtime.settings.worker.retention_interval_seconds
    last_retention = -retention_every
    while True:
        try:
            await sweep_once(runtime)
            if time.monotonic() - last_retention >= retention_every:
                last_retention = time.monotonic()
                await purge_old_artifacts(runtime)
        except Exception as exc:
            if is_unavailable_error(exc):
                logger.warning("sweep_skipped", reason=type(exc).__name__)
            else:
                logger.exception("sweep_failed")
        await asyncio.sleep(interval)

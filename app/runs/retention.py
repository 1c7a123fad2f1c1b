"""Retention: old artifacts go, except those that work still in progress uses."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.artifacts.services import ArtifactService
from app.hitl.models import HitlRequest, HitlStatus
from app.tasks.models import TERMINAL_TASK_STATUSES, AgentTask


async def artifacts_in_use(session: AsyncSession) -> set[str]:
    """Ids (as text) of the artifacts an open task reads or a pending request asks about."""
    in_use: set[str] = set()
    open_tasks = select(AgentTask.context_ids).where(AgentTask.status.not_in([s.value for s in TERMINAL_TASK_STATUSES]))
    for context_ids in await session.scalars(open_tasks):
        in_use.update(context_ids or [])
    pending = select(HitlRequest.artifact_ids).where(HitlRequest.status == HitlStatus.PENDING.value)
    for artifact_ids in await session.scalars(pending):
        in_use.update(artifact_ids or [])
    return in_use


async def purge_artifacts(artifacts: ArtifactService, older_than_days: int, *, actor: str) -> tuple[int, int]:
    """Purge artifacts older than that; returns (purged, kept because in use)."""
    in_use = await artifacts_in_use(artifacts.repository.session)
    return await artifacts.purge(older_than_days, in_use=in_use, actor=actor)

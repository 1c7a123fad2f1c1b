"""Two first tasks of one agent start at once: its status row is created once, and neither fails."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from app.agents.models import AgentState, AgentStatus
from app.agents.services import AgentService
from app.config import load_settings
from app.db.engine import build_db_config
from app.projects.models import Project


async def test_concurrent_first_statuses_of_an_agent(own_services_env: dict[str, str]) -> None:
    config = build_db_config(load_settings(own_services_env).db)
    try:
        async with config.get_session() as session:
            project = Project(name="race", description="")
            session.add(project)
            await session.commit()
            project_id = project.id
        barrier = asyncio.Barrier(8)

        async def start_one(n: int) -> None:
            async with config.get_session() as session:
                await barrier.wait()  # all look for the row at the same moment
                await AgentService(session=session).set_status(project_id, "coder", AgentState.WORKING)
                await session.commit()

        await asyncio.gather(*(start_one(n) for n in range(8)))
        async with config.get_session() as session:
            rows = await session.scalar(
                select(func.count()).select_from(AgentStatus).where(AgentStatus.project_id == project_id)
            )
            status = await session.scalar(select(AgentStatus.status).where(AgentStatus.project_id == project_id))
        assert (rows, status) == (1, "working")
    finally:
        await config.get_engine().dispose()

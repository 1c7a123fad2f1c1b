"""Two first tasks of one agent start at once: its status row is created once, and neither fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import UUID

import pytest
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from sqlalchemy import func, select, text

from app.agents.models import AgentState, AgentStatus
from app.agents.services import AgentService
from app.config import load_settings
from app.db.engine import build_db_config
from app.events.models import Event
from app.events.outbox import WRITTEN_KEY
from app.events.services import EventService
from app.projects.models import Project


@pytest.fixture
async def database(own_services_env: dict[str, str]) -> AsyncIterator[tuple[SQLAlchemyAsyncConfig, UUID]]:
    """The config of a database of the test's own, and a project in it."""
    config = build_db_config(load_settings(own_services_env).db)
    try:
        async with config.get_session() as session:
            project = Project(name="agent status", description="")
            session.add(project)
            await session.commit()
        yield config, project.id
    finally:
        await config.get_engine().dispose()


async def test_concurrent_first_statuses_of_an_agent(database: tuple[SQLAlchemyAsyncConfig, UUID]) -> None:
    config, project_id = database
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


async def test_status_as_the_last_write_carries_the_events(database: tuple[SQLAlchemyAsyncConfig, UUID]) -> None:
    """`last=True` on PostgreSQL: the upsert and the transaction's events in one statement; the
    status event only when the status changed, the events recorded before it in any case, no order
    lock taken when nothing is written."""
    config, project_id = database
    written: list[list[tuple[str, str]]] = []
    for state in (AgentState.WORKING, AgentState.WORKING, AgentState.IDLE):
        async with config.get_session() as session:
            await EventService(session=session).record(
                "project_updated",
                project_id=project_id,
                data={"project_id": str(project_id), "changes": [], "status": "active"},
            )
            await AgentService(session=session).set_status(project_id, "coder", state, last=True)
            written.append([(event.event_type, str(event.id)) for event in session.info.get(WRITTEN_KEY, [])])
            await session.commit()
    async with config.get_session() as session:
        changed = await AgentService(session=session).set_status(project_id, "coder", AgentState.IDLE, last=True)
        locks = await session.scalar(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        )
        assert (changed, locks, session.info.get(WRITTEN_KEY) or []) == (False, 0, [])
        await session.commit()
    async with config.get_session() as session:
        stored = (
            await session.execute(
                select(Event.event_type, Event.id).where(Event.project_id == project_id).order_by(Event.id)
            )
        ).all()
    kinds = [[kind for kind, _ in transaction] for transaction in written]
    assert kinds == [
        ["project_updated", "agent_status_changed"],
        ["project_updated"],
        ["project_updated", "agent_status_changed"],
    ]
    assert [(kind, str(event_id)) for kind, event_id in stored] == [pair for batch in written for pair in batch]

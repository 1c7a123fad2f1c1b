"""Hot reads run by asyncpg itself (`app.db.driver.DriverRead`) answer what SQLAlchemy answers, and a
connection lost under them fails as every statement does: an invalidated connection (503), after
which the pool serves a new one. Their connection (`app.core.runtime.read_connection`) goes back to
the pool however the request ends, cancelled included."""

from __future__ import annotations

import asyncio
import datetime
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.artifacts.models import Artifact
from app.artifacts.search import summary_columns
from app.config import load_settings
from app.core.runtime import read_connection
from app.db.driver import DriverRead
from app.db.engine import build_db_config, upgrade_database
from app.projects.models import Project
from app.tasks.models import AgentTask
from tests.conftest import create_pg_database, drop_pg_database, require_services

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    require_services()
    name = f"test_driver_{uuid.uuid4().hex[:8]}"
    url = create_pg_database(name)
    try:
        upgrade_database(load_settings({"DATABASE_URL": url}).db)
        yield url
    finally:
        drop_pg_database(name)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    settings = load_settings({"DATABASE_URL": database_url, "BOTARMY_DB_POOL_SIZE": "2"})
    engine = build_db_config(settings.db).get_engine()
    try:
        yield engine
    finally:
        await engine.dispose()


async def a_project_with_work(engine: AsyncEngine) -> uuid.UUID:
    project_id = uuid.uuid4()
    now = datetime.datetime.now(datetime.UTC)
    async with engine.begin() as connection:
        await connection.execute(
            insert(Project),
            [{"id": project_id, "name": "p", "description": "", "settings": {"a": [1, 2]}}],
        )
        await connection.execute(
            insert(AgentTask),
            [
                {
                    "id": uuid.uuid4(),
                    "project_id": project_id,
                    "agent_type": "coder",
                    "instructions": "x",
                    "context_ids": [],
                    "status": "queued",
                    "queued_at": now,
                }
                for _ in range(3)
            ],
        )
        await connection.execute(
            insert(Artifact),
            [
                {
                    "id": uuid.uuid4(),
                    "project_id": project_id,
                    "artifact_type": "source_code",
                    "title": f"t{n}",
                    "content": {"text": "c"},
                    "metadata": {"tags": ["x"], "confidence": 0.5},
                }
                for n in range(3)
            ],
        )
    return project_id


READS: dict[str, Any] = {
    "status": select(AgentTask.id, AgentTask.agent_type, AgentTask.status, AgentTask.created_at, AgentTask.queued_at)
    .select_from(Project)
    .outerjoin(AgentTask, AgentTask.project_id == Project.id)
    .where(Project.id == bindparam("project_id"))
    .order_by(AgentTask.id),
    "project": select(Project.id, Project.name, Project.settings, Project.budget_tokens, Project.created_at).where(
        Project.id == bindparam("project_id")
    ),
    "artifacts": select(*summary_columns(Artifact))
    .where(Artifact.project_id == bindparam("project_id"), Artifact.deleted_at.is_(None))
    .order_by(Artifact.id)
    .limit(bindparam("page_size")),
}


@pytest.mark.parametrize("name", sorted(READS))
async def test_the_driver_answers_what_sqlalchemy_answers(engine: AsyncEngine, name: str) -> None:
    project_id = await a_project_with_work(engine)
    params = {"project_id": project_id, "page_size": 2}
    async with engine.connect() as connection:
        through_sqlalchemy = [tuple(row) for row in await connection.execute(READS[name], params)]
    async with engine.connect() as connection:
        by_the_driver = [tuple(row) for row in await DriverRead(READS[name]).rows(connection, params)]
    assert by_the_driver == through_sqlalchemy
    assert by_the_driver  # compared on real rows
    # Same types too (what the api encodes): UUIDs, aware datetimes, decoded JSON.
    assert [[type(value) for value in row] for row in by_the_driver] == [
        [type(value) for value in row] for row in through_sqlalchemy
    ]


async def test_a_lost_connection_is_invalidated_and_replaced(engine: AsyncEngine) -> None:
    project_id = await a_project_with_work(engine)
    read = DriverRead(READS["project"])
    async with engine.connect() as connection:
        backend = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await connection.commit()
        async with engine.connect() as killer:
            await killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        with pytest.raises(DBAPIError) as lost:
            await read.rows(connection, {"project_id": project_id})
        assert lost.value.connection_invalidated  # the api answers it 503
    async with engine.connect() as connection:  # the pool's next connection works
        assert len(await read.rows(connection, {"project_id": project_id})) == 1


async def test_cancelled_reads_give_their_connections_back(engine: AsyncEngine) -> None:
    """Requests dropped at any moment, and again while they end: waiting for a connection, reading,
    or closing. Half of them also begin a transaction (a statement through SQLAlchemy), whose close
    must ROLLBACK even when cancelled meanwhile. Each connection goes back to the pool (a read cut
    short mid-statement is replaced, as with any statement)."""
    project_id = await a_project_with_work(engine)
    read = DriverRead(READS["status"])
    params = {"project_id": project_id}

    async def one_request(begins: bool) -> None:
        async with read_connection(engine) as connection:
            await read.rows(connection, params)
            if begins:
                await connection.execute(READS["project"], params)

    def keep_cancelling(request: asyncio.Task[None]) -> None:
        if not request.done():
            request.cancel()
            asyncio.get_running_loop().call_later(0.0005, keep_cancelling, request)

    outcomes: dict[str, int] = {"done": 0, "cancelled": 0}
    rng = random.Random(17)
    for _ in range(5):
        requests = [asyncio.create_task(one_request(begins=n % 2 == 0)) for n in range(40)]
        for request in requests:
            asyncio.get_running_loop().call_later(rng.uniform(0, 0.1), keep_cancelling, request)
        for result in await asyncio.gather(*requests, return_exceptions=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
            outcomes["cancelled" if isinstance(result, asyncio.CancelledError) else "done"] += 1
    assert outcomes["cancelled"] and outcomes["done"], outcomes  # dropped at some moment, not all or none
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with read_connection(engine) as connection:  # and the pool serves as before
        assert len(await read.rows(connection, params)) == 3

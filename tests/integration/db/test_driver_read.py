"""Hot reads run by asyncpg itself (`app.db.driver.DriverRead`) answer what SQLAlchemy answers, and a
connection lost under them fails as every statement does: an invalidated connection (503), after
which the pool serves a new one."""

from __future__ import annotations

import datetime
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

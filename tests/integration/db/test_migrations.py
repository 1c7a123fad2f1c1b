"""The initial migration builds the schema on both databases, and agrees with the models."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import load_settings
from app.db.compare import compare_type, include_object_for
from app.db.engine import upgrade_database
from app.models import metadata
from tests.conftest import create_pg_database, drop_pg_database, require_services


async def _diff_and_tables(url: str) -> tuple[list[Any], set[str]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:

            def inspect_schema(sync_connection: Any) -> tuple[list[Any], set[str]]:
                opts = {
                    "compare_type": compare_type,
                    "include_object": include_object_for(sync_connection.dialect.name),
                }
                context = MigrationContext.configure(sync_connection, opts=opts)
                return compare_metadata(context, metadata), set(inspect(sync_connection).get_table_names())

            return await connection.run_sync(inspect_schema)
    finally:
        await engine.dispose()


def _check(url: str) -> None:
    settings = load_settings({"DATABASE_URL": url})
    upgrade_database(settings.db)
    upgrade_database(settings.db)  # a second upgrade is a no-op, not an error
    diff, tables = asyncio.run(_diff_and_tables(settings.db.url))
    assert diff == [], f"models and migrations disagree: {diff}"
    assert set(metadata.tables) | {"alembic_version"} == tables
    # The comparison does see a difference when there is one.
    asyncio.run(_execute(settings.db.url, "DROP INDEX ix_event_event_type"))
    diff, _ = asyncio.run(_diff_and_tables(settings.db.url))
    assert [change[0] for change in diff] == ["add_index"]


async def _execute(url: str, statement: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def empty_postgresql() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database of this test's own, dropped afterwards."""
    require_services()
    name = f"botarmy_migrate_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(name)
    try:
        yield url
    finally:
        drop_pg_database(name)


# The trigram indexes are PostgreSQL only (`ddl_if`); autogenerate says it cannot compare them on SQLite.
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_migration_matches_models_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'new.db'}")


@pytest.mark.services
def test_migration_matches_models_on_postgresql(empty_postgresql: str) -> None:
    _check(empty_postgresql)


# The project table as every revision so far has it (the migrations tested here change others).
OLD_PROJECT = sa.table(
    "project",
    *(sa.column(name) for name in ("name", "description", "status", "oversight_level")),
    sa.column("settings", JsonB),
    sa.column("id", GUID()),
    sa.column("created_at", DateTimeUTC()),
    sa.column("updated_at", DateTimeUTC()),
)


BEFORE_SEARCH_TEXT = "3f8b1c6e2a47"  # the revision before 9a4d2f7c1e85 added artifact.search_text


async def _insert_artifact_before_search_text(url: str) -> uuid.UUID:
    """A project and an artifact as the schema before `search_text` held them."""
    artifact = sa.table(
        "artifact",
        *(sa.column(name) for name in ("artifact_type", "granularity", "title", "version", "stale")),
        sa.column("id", GUID()),
        sa.column("project_id", GUID()),
        sa.column("content", JsonB),
        sa.column("metadata", JsonB),
        sa.column("created_at", DateTimeUTC()),
        sa.column("updated_at", DateTimeUTC()),
    )
    now = datetime.datetime.now(datetime.UTC)
    project_id, artifact_id = uuid.uuid4(), uuid.uuid4()
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                OLD_PROJECT.insert().values(
                    id=project_id,
                    name="old",
                    description="",
                    status="active",
                    oversight_level="medium",
                    settings={},
                    created_at=now,
                    updated_at=now,
                )
            )
            await connection.execute(
                artifact.insert().values(
                    id=artifact_id,
                    project_id=project_id,
                    artifact_type="user_input",
                    granularity="document",
                    title="Old NOTE",
                    version=1,
                    stale=False,
                    content={"text": "Crème Brûlée", "n": [7]},
                    metadata={},
                    created_at=now,
                    updated_at=now,
                )
            )
    finally:
        await engine.dispose()
    return artifact_id


async def _search_text(url: str, artifact_id: uuid.UUID) -> str | None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            artifact = sa.table("artifact", sa.column("id", GUID()), sa.column("search_text"))
            found = await connection.scalar(sa.select(artifact.c.search_text).where(artifact.c.id == artifact_id))
            return None if found is None else str(found)
    finally:
        await engine.dispose()


def _check_search_text_backfill(url: str) -> None:
    settings = load_settings({"DATABASE_URL": url})
    upgrade_database(settings.db, BEFORE_SEARCH_TEXT)
    artifact_id = asyncio.run(_insert_artifact_before_search_text(settings.db.url))
    upgrade_database(settings.db)
    search_text = asyncio.run(_search_text(settings.db.url, artifact_id))
    assert search_text is not None
    lines = search_text.split("\n")
    assert lines[0] == "old note"  # the title, then the content's texts (in the order the database keeps its keys)
    assert sorted(lines[1:]) == ["7", "crème brûlée"]


def test_search_text_is_filled_for_existing_artifacts_on_sqlite(tmp_path: Path) -> None:
    _check_search_text_backfill(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.services
def test_search_text_is_filled_for_existing_artifacts_on_postgresql(empty_postgresql: str) -> None:
    _check_search_text_backfill(empty_postgresql)


BEFORE_TYPED_STATE = "5b7e3c9a1d24"  # the revision before the execution's control and the typed HITL hold
RESERVED = {
    "_gates": {
        "design": {"status": "pending", "request_id": "01a24de6-3382-724c-b473-6cde1a765b64", "phase": "design"}
    },
    "_redos": {"plan": 1},
    "_reask": [],
    "_paused_from": "waiting_for_hitl",
    "_stopped": True,
}
OLD_STEP_IDS = ["gate:design#2", "condition:3", "interrupted:5", "interrupted:", "review:pending", "4", "chat:17", None]


async def _insert_before_typed_state(url: str) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """An execution with reserved keys among its variables, and requests with `step_id` prefixes."""
    now = datetime.datetime.now(datetime.UTC)
    stamps = {"created_at": now, "updated_at": now}
    project_id, execution_id = uuid.uuid4(), uuid.uuid4()
    execution = sa.table(
        "workflow_execution",
        *(sa.column(name) for name in ("workflow_id", "status")),
        *(sa.column(name, JsonB) for name in ("definition", "step_state", "variables", "inputs")),
        sa.column("id", GUID()),
        sa.column("project_id", GUID()),
        sa.column("created_at", DateTimeUTC()),
        sa.column("updated_at", DateTimeUTC()),
    )
    request = sa.table(
        "hitl_request",
        *(sa.column(name) for name in ("step_id", "kind", "question", "urgency", "assigned_role", "status")),
        *(sa.column(name) for name in ("expiry_action",)),
        *(sa.column(name, JsonB) for name in ("options", "artifact_ids")),
        sa.column("id", GUID()),
        sa.column("project_id", GUID()),
        sa.column("created_at", DateTimeUTC()),
        sa.column("updated_at", DateTimeUTC()),
    )
    request_ids = [uuid.uuid4() for _ in OLD_STEP_IDS]
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                OLD_PROJECT.insert().values(
                    id=project_id,
                    name="old",
                    description="",
                    status="paused",
                    oversight_level="high",
                    settings={},
                    **stamps,
                )
            )
            await connection.execute(
                execution.insert().values(
                    id=execution_id,
                    project_id=project_id,
                    workflow_id="w",
                    status="paused",
                    definition={},
                    step_state={"0": {"status": "completed"}},
                    variables={"needs_ui": True, **RESERVED},
                    inputs={},
                    **stamps,
                )
            )
            for request_id, step_id in zip(request_ids, OLD_STEP_IDS, strict=True):
                await connection.execute(
                    request.insert().values(
                        id=request_id,
                        project_id=project_id,
                        step_id=step_id,
                        kind="manual",
                        question="?",
                        urgency="medium",
                        assigned_role="product_owner",
                        status="pending",
                        expiry_action="pause",
                        options=["approve"],
                        artifact_ids=[],
                        **stamps,
                    )
                )
    finally:
        await engine.dispose()
    return execution_id, request_ids


async def _typed_state(url: str, execution_id: uuid.UUID, request_ids: list[uuid.UUID]) -> tuple[Any, ...]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            execution = sa.table(
                "workflow_execution",
                sa.column("id", GUID()),
                sa.column("variables", JsonB),
                sa.column("control", JsonB),
            )
            found = (
                await connection.execute(
                    sa.select(execution.c.variables, execution.c.control).where(execution.c.id == execution_id)
                )
            ).one()
            request = sa.table("hitl_request", sa.column("id", GUID()), sa.column("hold_kind"), sa.column("hold_ref"))
            holds = {
                row.id: (row.hold_kind, row.hold_ref)
                for row in await connection.execute(sa.select(request).where(request.c.id.in_(request_ids)))
            }
            return found.variables, found.control, [holds[request_id] for request_id in request_ids]
    finally:
        await engine.dispose()


def _check_typed_state_migration(url: str) -> None:
    settings = load_settings({"DATABASE_URL": url})
    upgrade_database(settings.db, BEFORE_TYPED_STATE)
    execution_id, request_ids = asyncio.run(_insert_before_typed_state(settings.db.url))
    upgrade_database(settings.db)
    variables, control, holds = asyncio.run(_typed_state(settings.db.url, execution_id, request_ids))
    assert variables == {"needs_ui": True}  # only the user's own
    assert control == {key.removeprefix("_"): value for key, value in RESERVED.items()}
    assert holds == [
        ("gate", "design#2"),
        ("condition", "3"),
        ("interrupted", "5"),
        ("interrupted", ""),
        ("review", "pending"),
        ("step", "4"),
        ("step", "chat:17"),
        (None, None),
    ]


def test_typed_state_migration_moves_existing_rows_on_sqlite(tmp_path: Path) -> None:
    _check_typed_state_migration(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.services
def test_typed_state_migration_moves_existing_rows_on_postgresql(empty_postgresql: str) -> None:
    _check_typed_state_migration(empty_postgresql)

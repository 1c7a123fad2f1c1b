"""The initial migration builds the schema on both databases, and agrees with the models."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import load_settings
from app.db.compare import compare_type
from app.db.engine import upgrade_database
from app.db.models import metadata
from tests.conftest import create_pg_database, drop_pg_database, require_services


async def _diff_and_tables(url: str) -> tuple[list[Any], set[str]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:

            def inspect_schema(sync_connection: Any) -> tuple[list[Any], set[str]]:
                context = MigrationContext.configure(sync_connection, opts={"compare_type": compare_type})
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


# The trigram indexes are PostgreSQL only (`ddl_if`); autogenerate says it cannot compare them on SQLite.
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_migration_matches_models_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'new.db'}")


@pytest.mark.services
def test_migration_matches_models_on_postgresql() -> None:
    require_services()
    name = f"botarmy_migrate_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(name)
    try:
        _check(url)
    finally:
        drop_pg_database(name)

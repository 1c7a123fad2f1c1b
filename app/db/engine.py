"""The database configuration (advanced-alchemy) and schema migrations, from settings."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy import event

from app.config import REPO_ROOT, DatabaseSettings
from app.core.channels import EventPublisher, session_info

MIGRATIONS_DIR = REPO_ROOT / "migrations"
ALEMBIC_INI = REPO_ROOT / "alembic.ini"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers work beside the one writer; foreign keys are off by default in SQLite.
    # The driver's own transaction handling is switched off: _sqlite_begin starts them instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # Take the write lock when a transaction starts. A deferred transaction that reads and then
    # writes fails at once ("database is locked") if another connection wrote in between;
    # an immediate one waits its turn (busy timeout) instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def build_db_config(settings: DatabaseSettings, publisher: EventPublisher | None = None) -> SQLAlchemyAsyncConfig:
    if settings.is_sqlite:
        engine_config = EngineConfig(connect_args={"timeout": 30}, echo=settings.echo)
    else:
        engine_config = EngineConfig(
            pool_size=settings.pool_size,
            max_overflow=settings.pool_size,
            pool_pre_ping=True,  # a connection that died while PostgreSQL was away is replaced, not used
            pool_timeout=max(1, round(settings.connect_timeout)),
            connect_args={"timeout": settings.connect_timeout},
            echo=settings.echo,
        )
    config = SQLAlchemyAsyncConfig(
        connection_string=settings.url,
        engine_config=engine_config,
        session_config=AsyncSessionConfig(expire_on_commit=False, info=session_info(publisher)),
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            script_config=str(ALEMBIC_INI),
            version_table_name="alembic_version",
            compare_type=True,
        ),
        before_send_handler="autocommit",
    )
    if settings.is_sqlite:
        engine = config.get_engine().sync_engine
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return config


def ensure_sqlite_directory(settings: DatabaseSettings) -> None:
    if not settings.is_sqlite:
        return
    path = settings.url.split(":///", 1)[1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def upgrade_database(settings: DatabaseSettings, revision: str = "head") -> None:
    """Bring the database to `revision`. Synchronous: Alembic's env.py runs its own event loop."""
    ensure_sqlite_directory(settings)
    AlembicCommands(sqlalchemy_config=build_db_config(settings)).upgrade(revision=revision)


async def upgrade_database_async(settings: DatabaseSettings) -> None:
    await asyncio.to_thread(upgrade_database, settings)

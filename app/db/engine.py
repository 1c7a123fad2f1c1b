"""The database configuration (advanced-alchemy) and schema migrations, from settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import msgspec
from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from litestar.types import BeforeMessageSendHookHandler
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.config import REPO_ROOT, DatabaseSettings
from app.core.channels import EventPublisher, session_info
from app.db.pool import FairAsyncQueuePool

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


# True while the code running only reads (an HTTP GET, see `reading_only`): its SQLite transactions
# begin deferred, beside the writer (WAL), instead of queuing for the write lock; on PostgreSQL its
# statements run without BEGIN and COMMIT (`_postgres_begin`).
_reading_only: ContextVar[bool] = ContextVar("reading_only", default=False)


def is_reading_only() -> bool:
    return _reading_only.get()


@contextlib.contextmanager
def reading_only(value: bool = True) -> Iterator[None]:
    """Transactions begun inside only read (`True`), or may write (`False`, e.g. a write within a GET)."""
    reset = _reading_only.set(value)
    try:
        yield
    finally:
        _reading_only.reset(reset)


async def self_committing_connection(session: AsyncSession) -> AsyncConnection:
    """The session's connection for one statement that commits by itself (PostgreSQL): outside a
    transaction block when the session has begun nothing, so that the server commits at the
    statement's end and its locks are not held across the round trip of a COMMIT; else the
    session's transaction, which the caller commits."""
    if isinstance(session.bind, AsyncEngine) and not session.in_transaction():
        return await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return await session.connection()


def _sqlite_begin(connection: Any) -> None:
    # A transaction that may write takes the write lock when it starts: a deferred one that reads
    # and then writes fails at once ("database is locked") if another connection wrote in between,
    # an immediate one waits its turn (busy timeout) instead. One that only reads takes no lock.
    connection.exec_driver_sql("BEGIN" if _reading_only.get() else "BEGIN IMMEDIATE")


def _postgres_begin(connection: Any) -> None:
    # A transaction that only reads needs no BEGIN and COMMIT (two round trips of its four for a
    # status read): under READ COMMITTED each statement sees its own snapshot either way. The
    # driver's adapter then starts no transaction and its commit and rollback send nothing. A
    # transaction that may write gets the pool's isolation back (the adapter's `_isolation_setting`).
    adapter = connection.connection.dbapi_connection
    adapter.isolation_level = "autocommit" if _reading_only.get() else adapter._isolation_setting


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # Instead of pre-ping (BEGIN, a statement, ROLLBACK: three round trips per checkout): a
    # connection whose socket was closed (PostgreSQL restarted, a proxy cut it) is known locally;
    # the pool then replaces it. A connection that died silently fails its first statement, and
    # SQLAlchemy invalidates the pool's older connections.
    if dbapi_connection._connection.is_closed():
        raise DisconnectionError("the connection was closed")


_json_encoder = msgspec.json.Encoder()


def json_text(value: Any) -> str:
    """A JSON column's value as the text the database stores: msgspec's compact rendering."""
    return _json_encoder.encode(value).decode()


# JSON columns (events, artifacts, settings) are encoded and decoded by msgspec itself: advanced-alchemy's
# default goes through its serializer registry first, twice msgspec's time to decode and five times to
# encode (an artifact's metadata and content, a dozen event payloads on every task).
JSON_CODEC: dict[str, Any] = {"json_serializer": json_text, "json_deserializer": msgspec.json.decode}


def build_db_config(
    settings: DatabaseSettings,
    publisher: EventPublisher | None = None,
    session_finisher: Callable[[str], BeforeMessageSendHookHandler] | None = None,
) -> SQLAlchemyAsyncConfig:
    """The database config; `session_finisher` makes, from the config's session scope key, the
    handler that ends a request's session (default: advanced-alchemy's autocommit)."""
    if settings.is_sqlite:
        # The same fair pool as PostgreSQL's: a new SQLite connection costs its pragmas, and an unfair
        # queue put the tail of 20 concurrent reads at several times their median.
        engine_config = EngineConfig(
            poolclass=FairAsyncQueuePool,
            pool_size=settings.pool_size,
            max_overflow=settings.pool_size,
            connect_args={"timeout": 30},
            echo=settings.echo,
            **JSON_CODEC,
        )
    else:
        engine_config = EngineConfig(
            poolclass=FairAsyncQueuePool,  # first come, first served (app.db.pool)
            pool_size=settings.pool_size,
            max_overflow=settings.pool_size,
            pool_timeout=max(1, round(settings.connect_timeout)),
            connect_args={"timeout": settings.connect_timeout},
            echo=settings.echo,
            **JSON_CODEC,
        )
    config = SQLAlchemyAsyncConfig(
        connection_string=settings.url,
        engine_config=engine_config,
        # advanced-alchemy's cache listener looked for its switch in the engine's execution options
        # on every commit (a copy of the engine each time: 2 % of a status read); no cache is used.
        session_config=AsyncSessionConfig(
            expire_on_commit=False, info={**session_info(publisher), "enable_cache_listener": False}
        ),
        enable_file_object_listener=False,  # no FileObject columns
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            script_config=str(ALEMBIC_INI),
            version_table_name="alembic_version",
            compare_type=True,
        ),
        before_send_handler="autocommit",
    )
    if session_finisher is not None:
        config.before_send_handler = session_finisher(config.session_scope_key)
    engine = config.get_engine().sync_engine
    if settings.is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        event.listen(engine.pool, "checkout", _refuse_closed_connection)
        event.listen(engine, "begin", _postgres_begin)
    return config


def ensure_sqlite_directory(settings: DatabaseSettings) -> None:
    path = settings.sqlite_file
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def upgrade_database(settings: DatabaseSettings, revision: str = "head") -> None:
    """Bring the database to `revision`. Synchronous: Alembic's env.py runs its own event loop."""
    ensure_sqlite_directory(settings)
    AlembicCommands(sqlalchemy_config=build_db_config(settings)).upgrade(revision=revision)


async def upgrade_database_async(settings: DatabaseSettings) -> None:
    await asyncio.to_thread(upgrade_database, settings)

"""Is the database's schema at the head Alembic revision? Asked by readiness and by the CLI.

A database *behind* the code (never migrated, or migrated by an older release) fails every query
that touches a new table or column: readiness answers 503 and the CLI says to run
`botarmy db upgrade`. A database at a revision this code does not know was migrated by a newer
release (a rolling deploy runs the migration first): this code keeps serving, since migrations
are written to be compatible with the release before them.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import DatabaseSettings
from app.core.exceptions import (
    SCHEMA_DETAIL,
    AppError,
    ServiceUnavailableError,
    is_schema_error,
    is_unavailable_error,
)
from app.core.logging import redact
from app.db.engine import MIGRATIONS_DIR, build_db_config

UPGRADE_HINT = "run `botarmy db upgrade`"
VERSION_TABLE = "alembic_version"


class SchemaNotReadyError(ServiceUnavailableError):
    """The database's schema is behind the code; the message says what to run."""


@functools.cache
def _revisions() -> tuple[frozenset[str], frozenset[str]]:
    """The head revisions and every revision of `migrations/` (read once: they never change while running)."""
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    return frozenset(scripts.get_heads()), frozenset(script.revision for script in scripts.walk_revisions())


def head_revisions() -> frozenset[str]:
    return _revisions()[0]


def _current_revisions(connection: Connection) -> frozenset[str]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return frozenset(context.get_current_heads())


def describe_problem(current: frozenset[str], heads: frozenset[str]) -> str | None:
    """None when the schema can serve this code; otherwise why not and what to run."""
    if current == heads:
        return None
    if not current:
        return f"the database has no schema yet: {UPGRADE_HINT}"
    if not current <= _revisions()[1]:
        return None  # a newer release migrated it
    return (
        f"the database schema is at revision {', '.join(sorted(current))}, behind the head "
        f"{', '.join(sorted(heads))}: {UPGRADE_HINT}"
    )


async def schema_problem(engine: AsyncEngine) -> str | None:
    """Reads the database's revision (one query): None when it is ready for this code."""
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_revisions)
    return describe_problem(current, head_revisions())


async def current_revisions(settings: DatabaseSettings) -> frozenset[str]:
    """The database's revisions: empty when it was never migrated."""
    engine = build_db_config(settings).get_engine()
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current_revisions)
    finally:
        await engine.dispose()


async def require_schema(engine: AsyncEngine) -> None:
    problem = await schema_problem(engine)
    if problem is not None:
        raise SchemaNotReadyError(problem[0].upper() + problem[1:] + ".", extra={"component": "schema"})


async def check_database(settings: DatabaseSettings) -> None:
    """For commands that need the database: reachable, and its schema at the head revision."""
    engine = build_db_config(settings).get_engine()
    try:
        await require_schema(engine)
    finally:
        await engine.dispose()


@contextlib.contextmanager
def database_errors_in_one_line() -> Iterator[None]:
    """For commands: a database that cannot be used, or an app error (it says itself what is wrong,
    whatever its cause), is one line on stderr and exit code 1, not a stack trace; any other error
    goes on."""
    try:
        yield
    except AppError as exc:  # says itself what is wrong (a Redis away during a revocation, say)
        sys.stderr.write(f"botarmy: {exc.detail}\n")
        raise SystemExit(1) from None
    except Exception as exc:
        line = explain_database_error(exc)
        if line is None:
            raise
        sys.stderr.write(f"botarmy: {line}\n")
        raise SystemExit(1) from None


def explain_database_error(exc: BaseException) -> str | None:
    """One line for a command's user when the database cannot be used; None: another kind of error."""
    if isinstance(exc, SchemaNotReadyError):
        return exc.detail
    if is_schema_error(exc):
        return SCHEMA_DETAIL
    if is_unavailable_error(exc):
        return f"The database is unreachable ({_root(exc)}): check DATABASE_URL and that the server is up."
    if isinstance(exc, DBAPIError) or getattr(exc, "sqlstate", None):
        # Refused: no such database, wrong password, no permission (the driver's own words).
        orig = exc.orig if isinstance(exc, DBAPIError) else exc
        reason = (str(orig).strip().splitlines() or [_root(exc)])[0]
        return redact(f"The database refused: {reason}")
    return None


def _root(exc: BaseException) -> str:
    """The class of the error at the bottom of the chain (the driver's or the socket's)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return type(seen[-1]).__name__

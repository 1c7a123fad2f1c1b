"""The api's hottest reads, run on PostgreSQL by the driver itself.

A read of a few rows spent as much CPU in SQLAlchemy's execution (its context, autobegin, the
result and its rows) as in asyncpg sending it and decoding its answer: 15 % of a status request, a
fifth of what the api does beyond the bare limit (bench/README.md). Such reads are still built with
SQLAlchemy, compiled once; on PostgreSQL their SQL and values then go to asyncpg as they are, on
the connection's own pooled driver connection. The driver already answers every column as the
api needs it: UUID, text, aware datetimes, JSON decoded (by the codec SQLAlchemy's dialect set on
the connection); none of the columns read this way has a type whose result conversion would add
to that. On SQLite the statement runs through SQLAlchemy as any other.

Rows are read by position (an asyncpg `Record` and a SQLAlchemy `Row` both are sequences).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Dialect, Select, TextClause
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = ["DriverRead"]


class DriverRead:
    """A read statement, built once; `rows` runs it (on PostgreSQL straight on the driver)."""

    def __init__(self, statement: Select[Any] | TextClause) -> None:
        self.statement = statement
        self._sql: str | None = None
        self._names: tuple[str, ...] = ()
        self._defaults: dict[str, Any] = {}

    def _compile(self, dialect: Dialect) -> str:
        compiled = self.statement.compile(dialect=dialect)
        self._names = tuple(compiled.positiontup or ())
        self._defaults = dict(compiled.params)
        self._sql = str(compiled)
        return self._sql

    async def rows(
        self, connection: AsyncConnection | AsyncSession, params: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        """The rows, on a bare connection to PostgreSQL straight from the driver; otherwise (SQLite,
        or a session, whose transaction the statement joins) through SQLAlchemy."""
        if isinstance(connection, AsyncSession) or connection.dialect.name != "postgresql":
            return (await connection.execute(self.statement, dict(params))).all()
        sql = self._sql or self._compile(connection.dialect)
        values = [params[name] if name in params else self._defaults[name] for name in self._names]
        driver: Any = (await connection.get_raw_connection()).driver_connection
        try:
            records: Sequence[Sequence[Any]] = await driver.fetch(sql, *values)
        except Exception:  # noqa: BLE001 - whatever the driver raised, SQLAlchemy raises it as its own
            # Run again through SQLAlchemy, which raises the driver's error as for any statement:
            # a lost connection is invalidated (and answered 503), anything else is what it is.
            return (await connection.execute(self.statement, dict(params))).all()
        return records

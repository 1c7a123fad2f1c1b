"""Keyset pagination: every list of the api pages by one ordered key, the cursor being the last key seen.

Rows are read one past the page: if that one exists there is a next page, and its cursor is the last
key of this one. Ids are UUIDv7 or identities, so key order is creation order, and a page is stable
while rows are added behind it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

RowT = TypeVar("RowT")


def cut_page(rows: list[RowT], limit: int, key: str | int = "id") -> tuple[list[RowT], Any | None]:
    """The page of `rows` (read with `limit + 1`), and the next page's cursor (None: the last page):
    the attribute `key` of its last row, or its column at that position (rows read by position)."""
    if len(rows) > limit:
        last: Any = rows[limit - 1]
        return rows[:limit], last[key] if isinstance(key, int) else getattr(last, key)
    return rows, None


async def keyset_page(
    session: AsyncSession,
    statement: Select[tuple[RowT]],
    key: InstrumentedAttribute[Any],
    *,
    limit: int,
    after: Any | None,
) -> tuple[list[RowT], Any | None]:
    """One page of `statement` in `key` order, after the cursor `after` (None: the first page)."""
    if after is not None:
        statement = statement.where(key > after)
    rows = list(await session.scalars(statement.order_by(key).limit(limit + 1)))
    return cut_page(rows, limit, key.key)

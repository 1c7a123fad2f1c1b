"""Type comparison for autogenerate: advanced-alchemy types reflect as their storage type.

SQLite reports GUID's BINARY(16) as NUMERIC(16); without this every UUID column would look
changed on every autogenerate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from advanced_alchemy.types import GUID
from sqlalchemy import BINARY, CHAR, NUMERIC, Uuid
from sqlalchemy.types import TypeEngine


def compare_type(
    _context: Any,
    _inspected_column: Any,
    _metadata_column: Any,
    inspected_type: TypeEngine[Any],
    metadata_type: TypeEngine[Any],
) -> bool | None:
    if isinstance(metadata_type, GUID):
        return not isinstance(inspected_type, (BINARY, CHAR, NUMERIC, Uuid))
    return None  # Alembic's own comparison


def include_object_for(dialect_name: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """Alembic's `include_object`: leave out what the models make for another database only
    (`ddl_if(dialect=...)`, such as PostgreSQL's trigram index), which autogenerate would otherwise
    report as missing."""

    def include_object(item: Any, _name: str | None, _type: str, _reflected: bool, _compare_to: Any) -> bool:
        condition = getattr(item, "_ddl_if", None)
        if condition is None or condition.dialect is None:
            return True
        dialects = (condition.dialect,) if isinstance(condition.dialect, str) else tuple(condition.dialect)
        return dialect_name in dialects

    return include_object

"""Type comparison for autogenerate: advanced-alchemy types reflect as their storage type.

SQLite reports GUID's BINARY(16) as NUMERIC(16); without this every UUID column would look
changed on every autogenerate.
"""

from __future__ import annotations

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

"""The advanced-alchemy base classes we allow, and the helpers every model shares."""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from advanced_alchemy.base import IdentityBase, UUIDv7AuditBase, orm_registry
from sqlalchemy import CheckConstraint

__all__ = ("IdentityBase", "UUIDv7AuditBase", "enum_check", "metadata", "new_id")

metadata = orm_registry.metadata


def enum_check(column: str, enum: type[StrEnum]) -> CheckConstraint:
    """Status columns are strings with a check constraint, not native enums (they change often)."""
    allowed = ", ".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_allowed")


def new_id(model: type[UUIDv7AuditBase]) -> UUID:
    """A new id for a row of `model`, as its column's default makes it (UUIDv7): for rows written
    by core statements, or entities that must know their id before their INSERT."""
    default: Any = model.__table__.c.id.default
    made: UUID = default.arg(None)
    return made

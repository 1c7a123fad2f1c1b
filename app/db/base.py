"""The advanced-alchemy base classes we allow, and the helpers every model shares."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID

from advanced_alchemy.base import IdentityBase, UUIDv7AuditBase, orm_registry
from sqlalchemy import CheckConstraint
from sqlalchemy.orm.attributes import manager_of_class

__all__ = ("IdentityBase", "UUIDv7AuditBase", "entity_of", "enum_check", "metadata", "new_id")

metadata = orm_registry.metadata
ModelT = TypeVar("ModelT")


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


def entity_of(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """A transient entity of `model` with `values` (attribute names), made as a load makes one: the
    values put in its dict, not set one by one through the constructor's attribute events (about 6x
    the time; the worker makes several entities per task that no session ever flushes)."""
    entity: ModelT = manager_of_class(model).new_instance()
    entity.__dict__.update(values)
    return entity

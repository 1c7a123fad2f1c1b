"""Reads of one row by id as the columns an answer needs, with no ORM object in between; rows written
along another statement (`Along`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec
from sqlalchemy import CTE, bindparam, select

from app.db.driver import DriverRead

StructT = TypeVar("StructT", bound=msgspec.Struct)
# PostgreSQL: rows that another write's statement inserts too, one round trip less (`along_together`,
# `app.tasks.leases.TaskLeases.complete`): INSERTs as CTEs, each built once so that the statement taking
# them is built once for them, and the values of their bind parameters.
Along = tuple[tuple[CTE, ...], dict[str, Any]]
# The condition of a guarded `Along`'s inserts: the statement's completion (the CTE `completed`,
# `app.tasks.leases.completed_cte`) changed its row. For a statement that commits by itself, where a
# lost compare-and-set cannot be rolled back by the caller, so nothing may be written without it.
IF_COMPLETED = "EXISTS (SELECT 1 FROM completed)"


def along_together(*alongs: Along | None) -> Along | None:
    """The rows of `alongs` (None: none) inserted by one statement, in this order."""
    given = [along for along in alongs if along is not None]
    if not given:
        return None
    return tuple(cte for ctes, _ in given for cte in ctes), {
        key: value for _, params in given for key, value in params.items()
    }


def row_by_id(model: Any, struct: type[msgspec.Struct]) -> DriverRead:
    """The read, built once, of the row of `model` whose id is the parameter `id`, as the columns
    named by the fields of `struct` (each a mapped attribute of the model), in their order: its rows
    convert with `struct_of`.

    Reads of one object by id answer most of the api's GETs: an ORM load (`Session.get`) built its
    statement's cache key, an identity map entry and an instance for each, about a third of the
    request's Python time.
    """
    columns = [getattr(model, name) for name in struct.__struct_fields__]
    return DriverRead(select(*columns).where(model.id == bindparam("id")))


def struct_of(row: Sequence[Any], struct: type[StructT]) -> StructT:
    """The row of a `row_by_id` read as `struct`, its values converted (JSON text to UUIDs, ...)."""
    return msgspec.convert(dict(zip(struct.__struct_fields__, row, strict=True)), struct)

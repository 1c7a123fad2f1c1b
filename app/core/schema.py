"""msgspec base structs and the list envelope every collection answers with."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import msgspec
from litestar.exceptions import ValidationException

from app.core.exceptions import MAX_JSON_DEPTH
from app.core.sanitize import clean_json

T = TypeVar("T")


class Struct(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Response bodies."""


class InputStruct(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Request bodies: an unknown field is an error, not something silently dropped.

    Every text in a body is cleaned (`app.core.sanitize.clean_text`) as it is decoded, so that
    no service ever sees control characters or hidden bidi overrides. Subclasses with their own
    `__post_init__` call this one first.
    """

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, str | dict | list):
                setattr(self, name, clean_json(value))


def json_depth(value: Any) -> int:
    """How deeply `value` nests (a scalar is 0, `{}` and `[]` are 1)."""
    if isinstance(value, dict):
        return 1 + max((json_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(item) for item in value), default=0)
    return 0


def check_json_depth(field: str, value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """For free-form JSON fields, called from `__post_init__`: msgspec reports the ValueError as a 400."""
    if json_depth(value) > limit:
        msg = f"{field}: nested deeper than {limit} levels"
        raise ValueError(msg)


class Page(Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None


# The cursor of lists of events: an event id (in the query, digits; as a bare int the document could not
# say it is never negative).
EVENT_CURSOR = r"^[0-9]{1,18}$"

# Lists are cursor-paginated; `limit` is capped so that no request can ask for the whole table.
DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 100


_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def check_iso_datetimes(query: Mapping[str, Any], *names: str) -> None:
    """Query datetimes must be ISO 8601: Litestar would also take a bare number as a Unix time."""
    for name in names:
        value = query.get(name)
        if value is not None and not _ISO_DATETIME.match(str(value)):
            raise ValidationException(f"{name}: an ISO 8601 date-time such as 2026-11-24T12:00:00Z, not {value!r}")


def event_cursor(value: str | None) -> int | None:
    """The event id of a `cursor` query value (empty: the first page); a 400 for anything else."""
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise ValidationException(f"cursor: the next_cursor of the previous page (an event id), not {value!r}")
    return int(value)

"""msgspec base structs and the list envelope every collection answers with."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")


class Struct(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Response bodies."""


class InputStruct(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Request bodies: an unknown field is an error, not something silently dropped."""


class Page(Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None


# Lists are cursor-paginated; `limit` is capped so that no request can ask for the whole table.
DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 100

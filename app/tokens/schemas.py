from __future__ import annotations

import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from msgspec import Meta

from app.core.schema import InputStruct, Struct
from app.core.security import Role

MAX_EXPIRES_IN_SECONDS = 10 * 366 * 86400  # ten years
TokenName = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")]


class TokenCreate(InputStruct):
    name: TokenName
    role: Role
    # Limit the token to these projects; absent or null: every project.
    project_ids: Annotated[list[UUID], Meta(min_length=1, max_length=100)] | None = None
    # The token expires this many seconds after it is made; absent or null: never.
    expires_in_seconds: Annotated[int, Meta(ge=1, le=MAX_EXPIRES_IN_SECONDS)] | None = None


class Token(Struct):
    """A token as listed: never the secret itself."""

    id: UUID
    name: str
    role: Role
    project_ids: list[UUID] | None
    revoked: bool
    last_used_at: datetime.datetime | None
    expires_at: datetime.datetime | None
    created_at: datetime.datetime


class TokenCreated(Token):
    """The answer to a create: the only time the secret is shown."""

    token: str = msgspec.field(default="")

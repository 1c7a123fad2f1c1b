from __future__ import annotations

import datetime

from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.security import Role
from app.db.base import UUIDv7AuditBase, enum_check

__all__ = ("ApiToken", "Role")


class ApiToken(UUIDv7AuditBase):
    """A bearer token: only its SHA-256 is stored; the token itself is shown once."""

    __tablename__ = "api_token"
    __table_args__ = (enum_check("role", Role),)

    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # None: every project; otherwise the project ids this token may see.
    project_ids: Mapped[list[str] | None] = mapped_column(JsonB, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    last_used_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    # None: never expires; from then on the token is refused and its open streams are closed (4401).
    expires_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)

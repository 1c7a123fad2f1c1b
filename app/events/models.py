from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import IdentityBase


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Event(IdentityBase):
    """The append-only log: audit trail, real-time outbox and replay source at once.

    The id is given in commit order when the transaction commits (`app.events.outbox`), so
    `after=<id>` means "everything later", the same for every stream and process. Rows are only
    written through `EventService.record`. No foreign keys: the log outlives whatever it talks about.
    """

    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_project_id_id", "project_id", "id"),
        Index("ix_event_task_id", "task_id"),
        Index("ix_event_event_type", "event_type"),
        Index("ix_event_created_at", "created_at"),
    )

    event_type: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[UUID | None] = mapped_column(GUID, nullable=True)
    task_id: Mapped[UUID | None] = mapped_column(GUID, nullable=True)
    actor: Mapped[str | None] = mapped_column(String(100), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=_utcnow)

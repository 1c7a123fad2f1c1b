from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from app.core.schema import Struct


class EventMessage(Struct):
    """An event as clients receive it, live and on replay.

    `id` is None for live-only messages (`agent_output_delta`), which are never stored or replayed.
    """

    id: int | None
    event_type: str
    project_id: UUID | None
    data: dict[str, Any]
    timestamp: datetime.datetime


class AuditEvent(Struct):
    """An entry of the append-only log, with who did it."""

    id: int
    event_type: str
    project_id: UUID | None
    task_id: UUID | None
    actor: str | None
    data: dict[str, Any]
    timestamp: datetime.datetime

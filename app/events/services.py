from __future__ import annotations

from typing import Any
from uuid import UUID

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService

from app.events.models import Event
from app.events.outbox import add_to_outbox


class EventService(SQLAlchemyAsyncRepositoryService[Event]):
    """Writes to the append-only log. There is deliberately no update or delete path."""

    class Repo(SQLAlchemyAsyncRepository[Event]):
        model_type = Event

    repository_type = Repo

    async def record(
        self,
        event_type: str,
        *,
        project_id: UUID | None,
        data: dict[str, Any],
        task_id: UUID | None = None,
        actor: str | None = None,
    ) -> Event:
        """Add an event to the current transaction; it is published once that commits."""
        event = Event(event_type=event_type, project_id=project_id, task_id=task_id, actor=actor, data=data)
        session = self.repository.session
        session.add(event)
        add_to_outbox(session.sync_session, event)
        return event

from __future__ import annotations

import datetime
from typing import Any, Literal
from uuid import UUID

import structlog
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import entity_of
from app.db.repository import Repository
from app.events.catalog import PayloadError, check_payload
from app.events.models import Event
from app.events.outbox import add_to_outbox, write_pending


class PayloadChecks:
    """Outside production a payload that does not match the catalog is an error; in production, a log line."""

    strict = True


payload_checks = PayloadChecks()
_SERVICE_KEY = "botarmy.events.service"
logger = structlog.get_logger(__name__)


def new_event(
    event_type: str,
    *,
    project_id: UUID | None,
    data: dict[str, Any],
    task_id: UUID | None = None,
    actor: str | None = None,
) -> Event:
    """The event, its payload checked against the catalog, not yet recorded: for a statement that
    writes it itself (`app.events.outbox.INSERT_ORDERED_AFTER_WRITTEN`)."""
    try:
        check_payload(event_type, data)
    except PayloadError:
        if payload_checks.strict:
            raise
        logger.exception("event_payload_mismatch", event_type=event_type)
    # Never flushed by a session (written by the outbox's statements): made as a load makes one.
    values = {
        "event_type": event_type,
        "project_id": project_id,
        "task_id": task_id,
        "actor": actor,
        "data": data,
        "created_at": datetime.datetime.now(datetime.UTC),
    }
    return entity_of(Event, values)


def record_event(
    session: AsyncSession,
    event_type: str,
    *,
    project_id: UUID | None,
    data: dict[str, Any],
    task_id: UUID | None = None,
    actor: str | None = None,
) -> Event:
    """Add an event to the session's transaction: written (and given its id) when that commits, then
    published. A function, for the hot paths: an `EventService` costs as much to build as a statement."""
    event = new_event(event_type, project_id=project_id, data=data, task_id=task_id, actor=actor)
    add_to_outbox(session.sync_session, event)
    return event


class EventService(SQLAlchemyAsyncRepositoryService[Event]):
    """Writes to the append-only log. There is deliberately no update or delete path."""

    class Repo(Repository[Event]):
        model_type = Event

    repository_type = Repo

    @classmethod
    def of(cls, session: AsyncSession) -> EventService:
        """The session's event service, made once and kept with it: the services of a transaction
        share it (a service and its repository cost as much to build as a statement)."""
        found = session.info.get(_SERVICE_KEY)
        if not isinstance(found, EventService) or found.repository.session is not session:
            found = session.info[_SERVICE_KEY] = cls(session=session)
        return found

    async def record(
        self,
        event_type: str,
        *,
        project_id: UUID | None,
        data: dict[str, Any],
        task_id: UUID | None = None,
        actor: str | None = None,
    ) -> Event:
        """`record_event` on this service's session."""
        return record_event(
            self.repository.session, event_type, project_id=project_id, data=data, task_id=task_id, actor=actor
        )

    async def assign_ids(self) -> None:
        """Write the events recorded so far now, so that their ids are known before the commit.

        The event-order lock is then held until the commit (`app.events.outbox.write_pending`): call
        this last, with only statements on this transaction's own new rows after it.
        """
        await self.repository.session.run_sync(write_pending)

    async def notify_error(
        self,
        *,
        project_id: UUID,
        severity: Literal["warning", "error", "critical"],
        message: str,
        error_code: str,
        task_id: UUID | None = None,
        agent_type: str | None = None,
    ) -> Event:
        """An `error_notification`: something went wrong that a person watching should see."""
        return await self.record(
            "error_notification",
            project_id=project_id,
            task_id=task_id,
            data={
                "severity": severity,
                "message": message[:2000],
                "error_code": error_code,
                "task_id": str(task_id) if task_id else None,
                "agent_type": agent_type,
            },
        )

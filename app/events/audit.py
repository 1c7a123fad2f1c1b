"""Reading the event table as an audit log: filters, pages in id order, one event."""

from __future__ import annotations

import datetime
from uuid import UUID

import msgspec
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.exceptions import NotFoundError
from app.core.schema import Page
from app.core.security import Principal
from app.db.pages import keyset_page
from app.events.models import Event
from app.events.schemas import AuditEvent


class AuditFilters(msgspec.Struct, frozen=True, kw_only=True):
    project_id: UUID | None = None
    task_id: UUID | None = None
    event_type: str | None = None
    actor: str | None = None
    created_after: datetime.datetime | None = None
    created_before: datetime.datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.project_id is not None:
            conditions.append(Event.project_id == self.project_id)
        if self.task_id is not None:
            conditions.append(Event.task_id == self.task_id)
        if self.event_type is not None:
            conditions.append(Event.event_type == self.event_type)
        if self.actor is not None:
            conditions.append(Event.actor == self.actor)
        if self.created_after is not None:
            conditions.append(Event.created_at > self.created_after)
        if self.created_before is not None:
            conditions.append(Event.created_at < self.created_before)
        return conditions


def to_audit(event: Event) -> AuditEvent:
    return AuditEvent(
        id=event.id,
        event_type=event.event_type,
        project_id=event.project_id,
        task_id=event.task_id,
        actor=event.actor,
        data=event.data,
        timestamp=event.created_at,
    )


class AuditLog:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(
        self,
        conditions: list[ColumnElement[bool]],
        visible: frozenset[UUID] | None,
        *,
        limit: int,
        cursor: int | None,
    ) -> Page[AuditEvent]:
        """A page of the events that match, within the projects `visible` (None: all)."""
        statement = select(Event).where(*conditions)
        if visible is not None:
            statement = statement.where(Event.project_id.in_(visible))
        rows, next_cursor = await keyset_page(self.session, statement, Event.id, limit=limit, after=cursor)
        return Page(items=[to_audit(row) for row in rows], next_cursor=str(next_cursor) if next_cursor else None)

    async def one(self, event_id: int, principal: Principal) -> AuditEvent:
        event: Event | None = await self.session.get(Event, event_id)
        if event is None or (not principal.can_see(event.project_id) and principal.project_ids is not None):
            raise NotFoundError(f"Event {event_id} does not exist.")
        return to_audit(event)

"""The audit log: every event, oldest first, with filters; a token limited to some projects sees theirs."""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.exceptions import NotFoundError
from app.core.schema import DEFAULT_PAGE_LIMIT, EVENT_CURSOR, MAX_PAGE_LIMIT, Page, check_iso_datetimes, event_cursor
from app.core.security import Principal, Role, needs
from app.events.audit import AuditFilters, AuditLog
from app.events.schemas import AuditEvent
from app.projects.services import visible_project
from app.tasks.models import AgentTask


def provide_audit_log(db_session: AsyncSession) -> AuditLog:
    return AuditLog(db_session)


class AuditController(Controller):
    tags = ["events"]
    opt = needs(Role.VIEWER)
    dependencies = {"audit_log": Provide(provide_audit_log, sync_to_thread=False)}

    @get("/api/v1/audit/events", operation_id="ListAuditEvents")
    async def list_events(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        audit_log: NamedDependency[AuditLog],
        project_id: UUID | None = Parameter(default=None),
        task_id: UUID | None = Parameter(default=None),
        event_type: str | None = Parameter(default=None, pattern=r"^[a-z_]{1,64}$"),
        actor: str | None = Parameter(default=None, max_length=100),
        created_after: datetime.datetime | None = Parameter(default=None),
        created_before: datetime.datetime | None = Parameter(default=None),
        limit: int = Parameter(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
        cursor: str | None = Parameter(
            default=None, pattern=EVENT_CURSOR, description="next_cursor of the previous page"
        ),
    ) -> Page[AuditEvent]:
        """The append-only log, oldest first, with filters; a token limited to some projects sees theirs."""
        check_iso_datetimes(request.query_params, "created_after", "created_before")
        if project_id is not None:
            principal.ensure_can_see(project_id)
        found = AuditFilters(
            project_id=project_id,
            task_id=task_id,
            event_type=event_type,
            actor=actor,
            created_after=created_after,
            created_before=created_before,
        )
        return await audit_log.page(found.conditions(), principal.project_ids, limit=limit, cursor=event_cursor(cursor))

    @get("/api/v1/audit/events/{event_id:int}", operation_id="GetAuditEvent")
    async def get_event(
        self, principal: NamedDependency[Principal], audit_log: NamedDependency[AuditLog], event_id: FromPath[int]
    ) -> AuditEvent:
        return await audit_log.one(event_id, principal)

    @get("/api/v1/projects/{project_id:uuid}/events", operation_id="ListProjectEvents")
    async def project_events(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        audit_log: NamedDependency[AuditLog],
        project_id: FromPath[UUID],
        limit: int = Parameter(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
        cursor: str | None = Parameter(
            default=None, pattern=EVENT_CURSOR, description="next_cursor of the previous page"
        ),
    ) -> Page[AuditEvent]:
        await visible_project(db_session, principal, project_id)
        conditions = AuditFilters(project_id=project_id).conditions()
        return await AuditLog(db_session).page(
            conditions, principal.project_ids, limit=limit, cursor=event_cursor(cursor)
        )

    @get("/api/v1/tasks/{task_id:uuid}/events", operation_id="ListTaskEvents")
    async def task_events(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        audit_log: NamedDependency[AuditLog],
        task_id: FromPath[UUID],
        limit: int = Parameter(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
        cursor: str | None = Parameter(
            default=None, pattern=EVENT_CURSOR, description="next_cursor of the previous page"
        ),
    ) -> Page[AuditEvent]:
        task: AgentTask | None = await db_session.get(AgentTask, task_id)
        if task is None or not principal.can_see(task.project_id):
            raise NotFoundError(f"Task {task_id} does not exist.")
        conditions = AuditFilters(task_id=task_id).conditions()
        return await AuditLog(db_session).page(
            conditions, principal.project_ids, limit=limit, cursor=event_cursor(cursor)
        )

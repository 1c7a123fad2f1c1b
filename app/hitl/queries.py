"""Reading HITL requests: one as its caller may see it, pages of them, their context and statistics.

A pending request past its expiry reads as expired everywhere, whether or not the sweep has run yet.
"""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, and_, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.artifacts.models import Artifact
from app.core.exceptions import NotFoundError
from app.core.schema import Page
from app.core.security import Principal
from app.db.driver import DriverRead
from app.db.pages import cut_page
from app.hitl import schemas
from app.hitl.models import HitlHistory, HitlKind, HitlRequest, HitlStatus
from app.projects.models import Project
from app.projects.services import ensure_project_exists
from app.tasks.models import AgentTask

ANSWERED_STATUSES = (HitlStatus.APPROVED.value, HitlStatus.REJECTED.value, HitlStatus.AMENDED.value)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def effective_status(request: Any, at: datetime.datetime | None = None) -> str:
    """The status of a request (or of anything with its `status` and `expires_at`) as it reads now."""
    return status_at(request.status, request.expires_at, at or now())


def status_at(status: str, expires_at: datetime.datetime | None, at: datetime.datetime) -> str:
    """A pending request past its `expires_at` is expired, whether or not the sweep has run."""
    if status == HitlStatus.PENDING.value and expires_at is not None and expires_at <= at:
        return HitlStatus.EXPIRED.value
    return str(status)


def status_filter(status: HitlStatus, at: datetime.datetime) -> ColumnElement[bool]:
    """The rows whose *effective* status is `status` (a pending request past its expiry is expired)."""
    overdue = and_(HitlRequest.expires_at.is_not(None), HitlRequest.expires_at <= at)
    pending = HitlRequest.status == HitlStatus.PENDING.value
    if status == HitlStatus.PENDING:
        return and_(pending, ~overdue)
    if status == HitlStatus.EXPIRED:
        return or_(HitlRequest.status == HitlStatus.EXPIRED.value, and_(pending, overdue))
    return HitlRequest.status == status.value


# What a list answers of each request, as columns: rows go straight into summaries, no ORM objects.
SUMMARY_COLUMNS = (
    HitlRequest.id,
    HitlRequest.project_id,
    HitlRequest.task_id,
    HitlRequest.workflow_execution_id,
    HitlRequest.kind,
    HitlRequest.question,
    HitlRequest.urgency,
    HitlRequest.assigned_role,
    HitlRequest.status,
    HitlRequest.created_at,
    HitlRequest.expires_at,
    HitlRequest.responded_at,
)
# A project's requests, unfiltered (the common case): the project left-joined to them, so that an
# empty page also says whether the project exists (no row: it does not), in one round trip.
_PROJECT_PAGE = DriverRead(
    select(*SUMMARY_COLUMNS)
    .select_from(Project)
    .outerjoin(HitlRequest, HitlRequest.project_id == Project.id)
    .where(Project.id == bindparam("project_id"))
    .order_by(HitlRequest.id)
    .limit(bindparam("page_size"))
)
_PROJECT_PAGE_AFTER = DriverRead(
    select(*SUMMARY_COLUMNS)
    .select_from(Project)
    .outerjoin(HitlRequest, and_(HitlRequest.project_id == Project.id, HitlRequest.id > bindparam("cursor")))
    .where(Project.id == bindparam("project_id"))
    .order_by(HitlRequest.id)
    .limit(bindparam("page_size"))
)


def to_summary(request: Any) -> schemas.HitlRequestSummary:
    """Of a `HitlRequest`."""
    return schemas.HitlRequestSummary(
        request_id=request.id,
        project_id=request.project_id,
        task_id=request.task_id,
        workflow_execution_id=request.workflow_execution_id,
        kind=request.kind,
        question=request.question,
        urgency=request.urgency,
        assigned_role=request.assigned_role,
        status=effective_status(request),
        created_at=request.created_at,
        expires_at=request.expires_at,
        responded_at=request.responded_at,
    )


def summary_of_row(row: Sequence[Any], at: datetime.datetime) -> schemas.HitlRequestSummary:
    """Of a row of `SUMMARY_COLUMNS` (read by position: a driver's record or a SQLAlchemy row)."""
    request_id, project_id, task_id, execution_id, kind, question, urgency, role, status, created, expires, done = row
    status = status_at(status, expires, at)
    return schemas.HitlRequestSummary(
        request_id, project_id, task_id, execution_id, kind, question, urgency, role, status, created, expires, done
    )


class HitlPages:
    """Lists of HITL requests, as summary columns, on a bare connection (the api's reads)."""

    def __init__(self, executor: AsyncConnection) -> None:
        self.executor = executor

    async def page(
        self, conditions: list[ColumnElement[bool]], *, limit: int, cursor: UUID | None
    ) -> Page[schemas.HitlRequestSummary]:
        statement = select(*SUMMARY_COLUMNS).where(*conditions)
        if cursor is not None:
            statement = statement.where(HitlRequest.id > cursor)
        rows = list(await self.executor.execute(statement.order_by(HitlRequest.id).limit(limit + 1)))
        return self._page_of(rows, limit)

    @staticmethod
    def _page_of(rows: Sequence[Sequence[Any]], limit: int) -> Page[schemas.HitlRequestSummary]:
        rows, next_cursor = cut_page(list(rows), limit, key=0)
        at = now()
        items = [summary_of_row(row, at) for row in rows]
        return Page(items=items, next_cursor=str(next_cursor) if next_cursor else None)

    async def of_project(
        self,
        project_id: UUID,
        *,
        status: HitlStatus | None,
        kind: HitlKind | None,
        assigned_role: str | None,
        limit: int,
        cursor: UUID | None,
    ) -> Page[schemas.HitlRequestSummary]:
        """A page of the project's requests; NotFoundError if there is no such project."""
        if status is None and kind is None and assigned_role is None:
            params: dict[str, Any] = {"project_id": project_id, "page_size": limit + 1}
            if cursor is not None:
                params["cursor"] = cursor
            rows = await (_PROJECT_PAGE if cursor is None else _PROJECT_PAGE_AFTER).rows(self.executor, params)
            if not rows:
                raise NotFoundError(f"Project {project_id} does not exist.")
            return self._page_of([row for row in rows if row[0] is not None], limit)
        conditions = [HitlRequest.project_id == project_id]
        if status is not None:
            conditions.append(status_filter(status, now()))
        if kind is not None:
            conditions.append(HitlRequest.kind == kind.value)
        if assigned_role is not None:
            conditions.append(HitlRequest.assigned_role == assigned_role)
        page = await self.page(conditions, limit=limit, cursor=cursor)
        if not page.items:  # a request's project exists (deleting it deletes them): only an empty page asks
            await ensure_project_exists(self.executor, project_id)
        return page

    async def pending(
        self, principal: Principal, *, assigned_role: str | None, limit: int, cursor: UUID | None
    ) -> Page[schemas.HitlRequestSummary]:
        """Every request still waiting for an answer, in every project the caller may see."""
        conditions = [status_filter(HitlStatus.PENDING, now())]
        if principal.project_ids is not None:
            conditions.append(HitlRequest.project_id.in_(principal.project_ids))
        if assigned_role is not None:
            conditions.append(HitlRequest.assigned_role == assigned_role)
        return await self.page(conditions, limit=limit, cursor=cursor)


class HitlQueries:
    """The read side of HITL requests, for the api and the console."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def visible(self, principal: Principal, request_id: UUID) -> HitlRequest:
        request: HitlRequest | None = await self.session.get(HitlRequest, request_id)
        if request is None or not principal.can_see(request.project_id):
            raise NotFoundError(f"HITL request {request_id} does not exist.")
        return request

    async def view(self, request: HitlRequest) -> schemas.HitlRequestView:
        history = await self.session.scalars(
            select(HitlHistory).where(HitlHistory.request_id == request.id).order_by(HitlHistory.id)
        )
        return schemas.HitlRequestView(
            request_id=request.id,
            project_id=request.project_id,
            task_id=request.task_id,
            workflow_execution_id=request.workflow_execution_id,
            step_id=request.hold.label if request.hold else None,
            kind=request.kind,
            question=request.question,
            options=request.options,
            artifact_ids=[UUID(value) for value in request.artifact_ids],
            urgency=request.urgency,
            assigned_role=request.assigned_role,
            status=effective_status(request),
            user_response=request.user_response,
            response_comment=request.response_comment,
            amended_content=request.amended_content,
            responder=request.responder,
            expiry_action=request.expiry_action,
            history=[
                schemas.HistoryEntry(
                    action=entry.action,
                    actor=entry.actor,
                    comment=entry.comment,
                    data=entry.data or {},
                    created_at=entry.created_at,
                )
                for entry in history
            ],
            created_at=request.created_at,
            updated_at=request.updated_at,
            expires_at=request.expires_at,
            responded_at=request.responded_at,
        )

    async def context(self, hitl: HitlRequest) -> schemas.HitlContext:
        """The request with the artifacts it is about, its task, and what the agent said of its answer."""
        db_session = self.session
        ids = [UUID(value) for value in hitl.artifact_ids]
        found = {a.id: a for a in await db_session.scalars(select(Artifact).where(Artifact.id.in_(ids)))} if ids else {}
        artifacts = [
            schemas.ContextArtifact(
                id=artifact.id,
                artifact_type=artifact.artifact_type,
                title=artifact.title,
                version=artifact.version,
                content=artifact.content,
            )
            for artifact_id in ids
            if (artifact := found.get(artifact_id)) is not None and artifact.deleted_at is None
        ]
        task = await db_session.get(AgentTask, hitl.task_id) if hitl.task_id else None
        output = task.output or {} if task is not None else {}
        return schemas.HitlContext(
            request=await self.view(hitl),
            artifacts=artifacts,
            task=schemas.ContextTask(
                id=task.id,
                agent_type=task.agent_type,
                status=task.status,
                instructions=task.instructions,
                error=task.error,
                reasoning={
                    key: output[key] for key in ("summary", "confidence", "open_questions", "failed") if key in output
                },
            )
            if task is not None
            else None,
        )

    async def statistics(self, principal: Principal, project_id: UUID | None) -> schemas.Statistics:
        db_session = self.session
        statement = select(
            HitlRequest.status,
            HitlRequest.kind,
            HitlRequest.expires_at,
            HitlRequest.created_at,
            HitlRequest.responded_at,
        )
        if project_id is not None:
            principal.ensure_can_see(project_id)
            statement = statement.where(HitlRequest.project_id == project_id)
        elif principal.project_ids is not None:
            statement = statement.where(HitlRequest.project_id.in_(principal.project_ids))
        at = datetime.datetime.now(datetime.UTC)
        by_status: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        waits: list[float] = []
        for status, kind, expires_at, created_at, responded_at in await db_session.execute(statement):
            if status == HitlStatus.PENDING.value and expires_at is not None and expires_at <= at:
                status = HitlStatus.EXPIRED.value
            by_status[status] = by_status.get(status, 0) + 1
            by_kind[kind] = by_kind.get(kind, 0) + 1
            if responded_at is not None and status in ANSWERED_STATUSES:
                waits.append((responded_at - created_at).total_seconds())
        answered = sum(by_status.get(status, 0) for status in ANSWERED_STATUSES)
        return schemas.Statistics(
            project_id=project_id,
            total=sum(by_status.values()),
            by_status=by_status,
            by_kind=by_kind,
            approval_rate=round(by_status.get(HitlStatus.APPROVED.value, 0) / answered, 4) if answered else None,
            median_response_seconds=round(statistics.median(waits), 3) if waits else None,
        )

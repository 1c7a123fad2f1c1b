"""The HITL API: answer requests (alone or in bulk), read them with their history and context,
list them per project or pending everywhere, statistics, and each project's oversight level."""

from __future__ import annotations

import datetime
import statistics
from typing import Annotated, Any
from uuid import UUID

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import Schema
from litestar.params import Body, FromPath, JSONBody, Parameter
from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.artifacts.models import Artifact
from app.config import Settings
from app.core.exceptions import AppError, NotFoundError
from app.core.schema import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page
from app.core.security import Principal, Role, needs
from app.hitl import schemas
from app.hitl.models import HitlHistory, HitlKind, HitlRequest, HitlStatus
from app.projects.models import Project
from app.projects.schemas import ProjectUpdate
from app.projects.services import ProjectService
from app.runs.decisions import Answer, DecisionService, effective_status
from app.runs.jobs import commit_and_dispatch
from app.tasks.models import AgentTask


def provide_decisions(db_session: NamedDependency[AsyncSession], state: State) -> DecisionService:
    settings: Settings = state.settings
    return DecisionService(db_session, settings.hitl)


def status_filter(status: HitlStatus, at: datetime.datetime) -> ColumnElement[bool]:
    """The rows whose *effective* status is `status` (a pending request past its expiry is expired)."""
    overdue = and_(HitlRequest.expires_at.is_not(None), HitlRequest.expires_at <= at)
    pending = HitlRequest.status == HitlStatus.PENDING.value
    if status == HitlStatus.PENDING:
        return and_(pending, ~overdue)
    if status == HitlStatus.EXPIRED:
        return or_(HitlRequest.status == HitlStatus.EXPIRED.value, and_(pending, overdue))
    return HitlRequest.status == status.value


async def to_view(session: AsyncSession, request: HitlRequest) -> schemas.HitlRequestView:
    history = await session.scalars(
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


def to_summary(request: HitlRequest) -> schemas.HitlRequestSummary:
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


async def visible_request(session: AsyncSession, principal: Principal, request_id: UUID) -> HitlRequest:
    request: HitlRequest | None = await session.get(HitlRequest, request_id)
    if request is None or not principal.can_see(request.project_id):
        raise NotFoundError(f"HITL request {request_id} does not exist.")
    return request


async def page_of(
    session: AsyncSession, conditions: list[ColumnElement[bool]], limit: int, cursor: UUID | None
) -> Page[schemas.HitlRequestSummary]:
    statement = select(HitlRequest).where(*conditions)
    if cursor is not None:
        statement = statement.where(HitlRequest.id > cursor)
    rows = list(await session.scalars(statement.order_by(HitlRequest.id).limit(limit + 1)))
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return Page(items=[to_summary(row) for row in rows[:limit]], next_cursor=next_cursor)


class HitlController(Controller):
    path = "/api/v1/hitl"
    tags = ["hitl"]
    opt = needs(Role.VIEWER)
    dependencies = {
        "decisions": Provide(provide_decisions, sync_to_thread=False),
        "projects_service": Provide(create_service_provider(ProjectService)),
    }

    # -- answering ---------------------------------------------------------------------------

    @post(
        "/{request_id:uuid}/respond",
        operation_id="RespondToHitlRequest",
        status_code=200,
        opt=needs(Role.PRODUCT_OWNER),
    )
    async def respond(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        decisions: NamedDependency[DecisionService],
        request_id: FromPath[UUID],
        data: JSONBody[schemas.HitlResponse],
    ) -> schemas.HitlRequestView:
        """Approve, reject (comment required: the redo's feedback) or amend (comment and content required)."""
        answer = Answer(
            action=data.action, comment=data.comment, amended_content=data.amended_content, response=data.response
        )
        hitl, follow_ups = await decisions.respond(request_id, answer, principal=principal)
        view = await to_view(decisions.session, hitl)
        await commit_and_dispatch(request.app.state.runtime, decisions.session, follow_ups)
        return view

    @post(
        "/project/{project_id:uuid}/requests",
        operation_id="CreateHitlRequest",
        status_code=201,
        opt=needs(Role.PRODUCT_OWNER),
    )
    async def ask(
        self,
        principal: NamedDependency[Principal],
        decisions: NamedDependency[DecisionService],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
        data: JSONBody[schemas.ManualRequest],
    ) -> schemas.HitlRequestView:
        """Ask a question, hold a task that has not started for review, or review a finished one."""
        principal.ensure_can_see(project_id)
        await projects_service.get_project(project_id)
        hitl = await decisions.ask(
            project_id,
            question=data.question,
            task_id=data.task_id,
            artifact_ids=data.artifact_ids,
            assigned_role=data.assigned_role,
            urgency=data.urgency,
            actor=principal.name,
        )
        view = await to_view(decisions.session, hitl)
        await decisions.session.commit()
        return view

    @post("/bulk/approve", operation_id="BulkApproveHitlRequests", status_code=200, opt=needs(Role.PRODUCT_OWNER))
    async def bulk_approve(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        decisions: NamedDependency[DecisionService],
        data: JSONBody[schemas.BulkApprove],
    ) -> schemas.BulkResults:
        """Each request is approved in its own transaction; one failing does not stop the others."""
        results: list[schemas.BulkResult] = []
        for request_id in dict.fromkeys(data.request_ids):
            try:
                hitl, follow_ups = await decisions.respond(
                    request_id, Answer(action="approve", comment=data.comment), principal=principal
                )
                status = hitl.status
                await commit_and_dispatch(request.app.state.runtime, decisions.session, follow_ups)
            except AppError as exc:
                await decisions.session.rollback()
                results.append(
                    schemas.BulkResult(
                        request_id=request_id, ok=False, status=None, status_code=exc.status_code, detail=exc.detail
                    )
                )
                continue
            results.append(schemas.BulkResult(request_id=request_id, ok=True, status=status, status_code=200))
        return schemas.BulkResults(results=results)

    # -- reading -----------------------------------------------------------------------------

    @get("/{request_id:uuid}", operation_id="GetHitlRequest")
    async def get_request(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        request_id: FromPath[UUID],
    ) -> schemas.HitlRequestView:
        return await to_view(db_session, await visible_request(db_session, principal, request_id))

    @get("/{request_id:uuid}/history", operation_id="GetHitlRequestHistory")
    async def get_history(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        request_id: FromPath[UUID],
    ) -> list[schemas.HistoryEntry]:
        return (await to_view(db_session, await visible_request(db_session, principal, request_id))).history

    @get("/{request_id:uuid}/context", operation_id="GetHitlRequestContext")
    async def get_context(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        request_id: FromPath[UUID],
    ) -> schemas.HitlContext:
        """The request with the artifacts it is about, its task, and what the agent said of its answer."""
        hitl = await visible_request(db_session, principal, request_id)
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
            request=await to_view(db_session, hitl),
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

    @get("/project/{project_id:uuid}/requests", operation_id="ListProjectHitlRequests")
    async def list_requests(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
        status: HitlStatus | None = Parameter(default=None),
        kind: HitlKind | None = Parameter(default=None),
        assigned_role: str | None = Parameter(default=None, max_length=32, pattern=r"^[a-z_]+$"),
        limit: int = Parameter(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
        cursor: UUID | None = Parameter(default=None, description="next_cursor of the previous page"),
    ) -> Page[schemas.HitlRequestSummary]:
        principal.ensure_can_see(project_id)
        await projects_service.get_project(project_id)
        conditions = [HitlRequest.project_id == project_id]
        if status is not None:
            conditions.append(status_filter(status, datetime.datetime.now(datetime.UTC)))
        if kind is not None:
            conditions.append(HitlRequest.kind == kind.value)
        if assigned_role is not None:
            conditions.append(HitlRequest.assigned_role == assigned_role)
        return await page_of(db_session, conditions, limit, cursor)

    @get("/pending", operation_id="ListPendingHitlRequests")
    async def list_pending(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        assigned_role: str | None = Parameter(default=None, max_length=32, pattern=r"^[a-z_]+$"),
        limit: int = Parameter(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
        cursor: UUID | None = Parameter(default=None, description="next_cursor of the previous page"),
    ) -> Page[schemas.HitlRequestSummary]:
        """Every request still waiting for an answer, in every project the token may see."""
        conditions = [status_filter(HitlStatus.PENDING, datetime.datetime.now(datetime.UTC))]
        if principal.project_ids is not None:
            conditions.append(HitlRequest.project_id.in_(principal.project_ids))
        if assigned_role is not None:
            conditions.append(HitlRequest.assigned_role == assigned_role)
        return await page_of(db_session, conditions, limit, cursor)

    @get("/statistics", operation_id="GetHitlStatistics")
    async def get_statistics(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        project_id: UUID | None = Parameter(default=None),
    ) -> schemas.Statistics:
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

    # -- oversight ---------------------------------------------------------------------------

    @get("/project/{project_id:uuid}/oversight-level", operation_id="GetOversightLevel")
    async def get_oversight(
        self,
        principal: NamedDependency[Principal],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
    ) -> schemas.Oversight:
        principal.ensure_can_see(project_id)
        project: Project = await projects_service.get_project(project_id)
        return schemas.Oversight(project_id=project.id, oversight_level=project.oversight_level)  # type: ignore[arg-type]

    @post(
        "/project/{project_id:uuid}/oversight-level",
        operation_id="SetOversightLevel",
        status_code=200,
        opt=needs(Role.PRODUCT_OWNER),
    )
    async def set_oversight(
        self,
        principal: NamedDependency[Principal],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
        data: Annotated[
            schemas.OversightUpdate,
            Body(
                media_type=RequestEncodingType.JSON,
                # One of the two fields is required: what the struct's __post_init__ checks.
                schema_extra={"any_of": [Schema(required=["oversight_level"]), Schema(required=["level"])]},
            ),
        ],
    ) -> schemas.Oversight:
        """Takes effect at the next phase boundary of every running execution of the project."""
        principal.ensure_can_see(project_id)
        project = await projects_service.update_project(
            project_id, ProjectUpdate(oversight_level=data.chosen), actor=principal.name
        )
        await projects_service.repository.session.commit()
        return schemas.Oversight(project_id=project.id, oversight_level=project.oversight_level)  # type: ignore[arg-type]


ANSWERED_STATUSES = (HitlStatus.APPROVED.value, HitlStatus.REJECTED.value, HitlStatus.AMENDED.value)

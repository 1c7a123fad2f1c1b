"""The HITL API: answer requests (alone or in bulk), read them with their history and context,
list them per project or pending everywhere, statistics, and each project's oversight level."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import Schema
from litestar.params import Body, FromPath, JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.dependencies import RuntimeDependency, service_provider
from app.config import Settings
from app.core.exceptions import AppError
from app.core.schema import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page
from app.core.security import Principal, Role, needs
from app.hitl import schemas
from app.hitl.models import HitlKind, HitlStatus
from app.hitl.queries import HitlPages, HitlQueries
from app.projects.models import Project
from app.projects.schemas import ProjectUpdate
from app.projects.services import ProjectService
from app.runs.decisions import Answer, DecisionService
from app.runs.jobs import commit_and_dispatch


def provide_decisions(db_session: NamedDependency[AsyncSession], state: State) -> DecisionService:
    settings: Settings = state.settings
    return DecisionService(db_session, settings.hitl)


class HitlController(Controller):
    path = "/api/v1/hitl"
    tags = ["hitl"]
    opt = needs(Role.VIEWER)
    dependencies = {
        "decisions": Provide(provide_decisions, sync_to_thread=False),
        "projects_service": service_provider(ProjectService),
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
        runtime: RuntimeDependency,
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
        view = await HitlQueries(decisions.session).view(hitl)
        await commit_and_dispatch(runtime, decisions.session, follow_ups)
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
        view = await HitlQueries(decisions.session).view(hitl)
        await decisions.session.commit()
        return view

    @post("/bulk/approve", operation_id="BulkApproveHitlRequests", status_code=200, opt=needs(Role.PRODUCT_OWNER))
    async def bulk_approve(
        self,
        runtime: RuntimeDependency,
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
                await commit_and_dispatch(runtime, decisions.session, follow_ups)
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
        return await (queries := HitlQueries(db_session)).view(await queries.visible(principal, request_id))

    @get("/{request_id:uuid}/history", operation_id="GetHitlRequestHistory")
    async def get_history(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        request_id: FromPath[UUID],
    ) -> list[schemas.HistoryEntry]:
        return (await (queries := HitlQueries(db_session)).view(await queries.visible(principal, request_id))).history

    @get("/{request_id:uuid}/context", operation_id="GetHitlRequestContext")
    async def get_context(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        request_id: FromPath[UUID],
    ) -> schemas.HitlContext:
        """The request with the artifacts it is about, its task, and what the agent said of its answer."""
        queries = HitlQueries(db_session)
        return await queries.context(await queries.visible(principal, request_id))

    @get("/project/{project_id:uuid}/requests", operation_id="ListProjectHitlRequests")
    async def list_requests(
        self,
        runtime: RuntimeDependency,
        project_id: FromPath[UUID],
        status: HitlStatus | None = Parameter(default=None),
        kind: HitlKind | None = Parameter(default=None),
        assigned_role: str | None = Parameter(default=None, max_length=32, pattern=r"^[a-z_]+$"),
        limit: int = Parameter(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
        cursor: UUID | None = Parameter(default=None, description="next_cursor of the previous page"),
    ) -> Page[schemas.HitlRequestSummary]:
        async with runtime.connection() as connection:
            return await HitlPages(connection).of_project(
                project_id, status=status, kind=kind, assigned_role=assigned_role, limit=limit, cursor=cursor
            )

    @get("/pending", operation_id="ListPendingHitlRequests")
    async def list_pending(
        self,
        runtime: RuntimeDependency,
        principal: NamedDependency[Principal],
        assigned_role: str | None = Parameter(default=None, max_length=32, pattern=r"^[a-z_]+$"),
        limit: int = Parameter(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
        cursor: UUID | None = Parameter(default=None, description="next_cursor of the previous page"),
    ) -> Page[schemas.HitlRequestSummary]:
        """Every request still waiting for an answer, in every project the token may see."""
        async with runtime.connection() as connection:
            return await HitlPages(connection).pending(
                principal, assigned_role=assigned_role, limit=limit, cursor=cursor
            )

    @get("/statistics", operation_id="GetHitlStatistics")
    async def get_statistics(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        project_id: UUID | None = Parameter(default=None),
    ) -> schemas.Statistics:
        return await HitlQueries(db_session).statistics(principal, project_id)

    # -- oversight ---------------------------------------------------------------------------

    @get("/project/{project_id:uuid}/oversight-level", operation_id="GetOversightLevel")
    async def get_oversight(
        self,
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
    ) -> schemas.Oversight:
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
        project = await projects_service.update_project(
            project_id, ProjectUpdate(oversight_level=data.chosen), actor=principal.name
        )
        await projects_service.repository.session.commit()
        return schemas.Oversight(project_id=project.id, oversight_level=project.oversight_level)  # type: ignore[arg-type]

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

from app.api.dependencies import RuntimeDependency, service_provider
from app.artifacts import schemas
from app.artifacts.models import Artifact, ArtifactType, ArtifactVersion, Granularity
from app.artifacts.search import ArtifactFilters, list_page, page_json
from app.artifacts.services import ArtifactService
from app.core.exceptions import NotFoundError
from app.core.schema import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page, check_iso_datetimes
from app.core.security import Principal, Role, needs
from app.projects.services import ProjectService, ensure_project_exists
from app.runs.retention import purge_artifacts
from app.tasks.models import AgentType


def _summary_fields(row: Artifact) -> dict[str, Any]:
    return {
        "id": row.id,
        "project_id": row.project_id,
        "parent_id": row.parent_id,
        "source_agent": row.source_agent,
        "artifact_type": ArtifactType(row.artifact_type),
        "granularity": Granularity(row.granularity),
        "title": row.title,
        "version": row.version,
        "metadata": row.meta,
        "stale": row.stale,
        "stale_reason": row.stale_reason,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def to_artifact(row: Artifact) -> schemas.Artifact:
    return schemas.Artifact(**_summary_fields(row), task_id=row.task_id, content=row.content)


def to_summary(row: Artifact) -> schemas.ArtifactSummary:
    return schemas.ArtifactSummary(**_summary_fields(row))


def summary_of_row(row: Sequence[Any]) -> schemas.ArtifactSummary:
    """Of a row of `SUMMARY_FIELDS`, read by position: they are the summary's fields, in order."""
    return schemas.ArtifactSummary(*row)


def to_version(row: ArtifactVersion) -> schemas.ArtifactVersion:
    return schemas.ArtifactVersion(
        artifact_id=row.artifact_id,
        version=row.version,
        title=row.title,
        content=row.content,
        change_note=row.change_note,
        changed_by=row.changed_by,
        created_at=row.created_at,
    )


DEPENDENCIES = {
    "artifacts_service": service_provider(ArtifactService),
    "projects_service": service_provider(ProjectService),
}


class ProjectArtifactController(Controller):
    """The context store of one project."""

    path = "/api/v1/projects/{project_id:uuid}"
    tags = ["artifacts"]
    opt = needs(Role.VIEWER)
    dependencies = DEPENDENCIES

    @post("/artifacts", operation_id="CreateArtifact", status_code=201, opt=needs(Role.PRODUCT_OWNER))
    async def create_artifact(
        self,
        principal: NamedDependency[Principal],
        artifacts_service: NamedDependency[ArtifactService],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
        data: JSONBody[schemas.ArtifactCreate],
    ) -> schemas.Artifact:
        await projects_service.get_project(project_id)
        artifact = await artifacts_service.create_artifact(project_id, data, actor=principal.name)
        return to_artifact(artifact)

    @get("/artifacts", operation_id="ListArtifacts")
    async def list_artifacts(
        self,
        request: Request[Any, Any, Any],
        runtime: RuntimeDependency,
        project_id: FromPath[UUID],
        limit: int = Parameter(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
        cursor: UUID | None = Parameter(default=None, description="next_cursor of the previous page"),
        artifact_type: ArtifactType | None = Parameter(default=None),
        source_agent: AgentType | None = Parameter(default=None),
        granularity: Granularity | None = Parameter(default=None),
        tag: str | None = Parameter(default=None, max_length=50, pattern=r"^[A-Za-z0-9_.:-]+$"),
        q: str | None = Parameter(default=None, min_length=1, max_length=200, description="text in title or content"),
        created_after: datetime.datetime | None = Parameter(default=None),
        created_before: datetime.datetime | None = Parameter(default=None),
        stale: bool | None = Parameter(default=None),
        parent_id: UUID | None = Parameter(default=None),
    ) -> Page[schemas.ArtifactSummary]:
        check_iso_datetimes(request.query_params, "created_after", "created_before")
        filters = ArtifactFilters(
            artifact_type=artifact_type.value if artifact_type else None,
            source_agent=source_agent.value if source_agent else None,
            granularity=granularity.value if granularity else None,
            tag=tag,
            q=q,
            created_after=created_after,
            created_before=created_before,
            stale=stale,
            parent_id=parent_id,
        )
        async with runtime.connection() as connection:
            rendered = await page_json(connection, project_id, filters, limit=limit, cursor=cursor)
            if rendered is not None:  # on PostgreSQL the unfiltered page comes rendered: sent as it is
                items_json, count, last_id = rendered
                if not count:
                    await ensure_project_exists(connection, project_id)
                items = cast(list[schemas.ArtifactSummary], msgspec.Raw(items_json))
                return Page(items=items, next_cursor=str(last_id) if last_id else None)
            rows, next_cursor = await list_page(connection, project_id, filters, limit=limit, cursor=cursor)
            if not rows:  # an artifact's project exists (deleting it deletes them): only an empty page asks
                await ensure_project_exists(connection, project_id)
        items = [summary_of_row(row) for row in rows]
        return Page(items=items, next_cursor=str(next_cursor) if next_cursor else None)

    @get("/context", operation_id="GetProjectContext")
    async def get_context(
        self,
        artifacts_service: NamedDependency[ArtifactService],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
    ) -> schemas.ContextTree:
        await projects_service.get_project(project_id)
        documents = [
            schemas.ContextDocument(
                id=document.id,
                artifact_type=ArtifactType(document.artifact_type),
                granularity=Granularity(document.granularity),
                title=document.title,
                version=document.version,
                source_agent=document.source_agent,
                stale=document.stale,
                sections=[schemas.ContextSection(id=s.id, title=s.title, stale=s.stale) for s in sections],
            )
            for document, sections in await artifacts_service.tree(project_id)
        ]
        return schemas.ContextTree(project_id=project_id, documents=documents)


class ArtifactController(Controller):
    path = "/api/v1/artifacts"
    tags = ["artifacts"]
    opt = needs(Role.VIEWER)
    dependencies = DEPENDENCIES

    async def _visible(self, principal: Principal, service: ArtifactService, artifact_id: UUID) -> Artifact:
        artifact = await service.get_artifact(artifact_id)
        if not principal.can_see(artifact.project_id):
            raise NotFoundError(f"Artifact {artifact_id} does not exist.")
        return artifact

    @get("/{artifact_id:uuid}", operation_id="GetArtifact")
    async def get_artifact(
        self,
        principal: NamedDependency[Principal],
        artifacts_service: NamedDependency[ArtifactService],
        artifact_id: FromPath[UUID],
    ) -> schemas.Artifact:
        return to_artifact(await self._visible(principal, artifacts_service, artifact_id))

    @patch("/{artifact_id:uuid}", operation_id="UpdateArtifact", opt=needs(Role.PRODUCT_OWNER))
    async def update_artifact(
        self,
        principal: NamedDependency[Principal],
        artifacts_service: NamedDependency[ArtifactService],
        artifact_id: FromPath[UUID],
        data: JSONBody[schemas.ArtifactUpdate],
    ) -> schemas.Artifact:
        await self._visible(principal, artifacts_service, artifact_id)
        artifact = await artifacts_service.update_artifact(artifact_id, data, actor=principal.name)
        return to_artifact(artifact)

    @delete("/{artifact_id:uuid}", operation_id="DeleteArtifact", status_code=200, opt=needs(Role.PRODUCT_OWNER))
    async def delete_artifact(
        self,
        principal: NamedDependency[Principal],
        artifacts_service: NamedDependency[ArtifactService],
        artifact_id: FromPath[UUID],
    ) -> schemas.ArtifactSummary:
        await self._visible(principal, artifacts_service, artifact_id)
        return to_summary(await artifacts_service.delete_artifact(artifact_id, actor=principal.name))

    @get("/{artifact_id:uuid}/versions", operation_id="ListArtifactVersions")
    async def list_versions(
        self,
        principal: NamedDependency[Principal],
        artifacts_service: NamedDependency[ArtifactService],
        artifact_id: FromPath[UUID],
    ) -> Page[schemas.ArtifactVersionSummary]:
        await self._visible(principal, artifacts_service, artifact_id)
        versions = await artifacts_service.versions(artifact_id)
        items = [
            schemas.ArtifactVersionSummary(
                version=v.version,
                title=v.title,
                change_note=v.change_note,
                changed_by=v.changed_by,
                created_at=v.created_at,
            )
            for v in versions
        ]
        return Page(items=items, next_cursor=None)

    @get("/{artifact_id:uuid}/versions/{number:int}", operation_id="GetArtifactVersion")
    async def get_version(
        self,
        principal: NamedDependency[Principal],
        artifacts_service: NamedDependency[ArtifactService],
        artifact_id: FromPath[UUID],
        number: FromPath[int],
    ) -> schemas.ArtifactVersion:
        await self._visible(principal, artifacts_service, artifact_id)
        return to_version(await artifacts_service.version(artifact_id, number))

    @post("/purge", operation_id="PurgeArtifacts", status_code=200, opt=needs(Role.ADMIN))
    async def purge(
        self,
        principal: NamedDependency[Principal],
        artifacts_service: NamedDependency[ArtifactService],
        older_than_days: int = Parameter(ge=1, le=36500, description="age in days; referenced artifacts are kept"),
    ) -> schemas.PurgeResult:
        purged, kept = await purge_artifacts(artifacts_service, older_than_days, actor=principal.name)
        return schemas.PurgeResult(purged=purged, kept_referenced=kept, older_than_days=older_than_days)

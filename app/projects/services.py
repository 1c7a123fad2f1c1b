from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.exceptions import NotFoundError
from app.core.security import Principal
from app.db.driver import DriverRead
from app.db.pages import keyset_page
from app.db.repository import Repository
from app.db.rows import row_by_id, struct_of
from app.events.services import EventService
from app.projects import schemas
from app.projects.models import Project
from app.projects.schemas import ProjectCreate, ProjectUpdate


async def visible_project(session: AsyncSession, principal: Principal, project_id: UUID) -> Project:
    """The project, if it exists and the token may see it; NotFoundError otherwise (a project outside the
    token's scope is reported as missing)."""
    principal.ensure_can_see(project_id)
    project = await session.get(Project, project_id)
    if project is None:
        raise NotFoundError(f"Project {project_id} does not exist.")
    return project


# Built once: whether a project exists, for the reads that need no more of it.
_EXISTS = DriverRead(select(Project.id).where(Project.id == bindparam("project_id")))
_PROJECT_VIEW = row_by_id(Project, schemas.Project)


async def ensure_project_exists(connection: AsyncConnection, project_id: UUID) -> None:
    """NotFoundError unless the project exists: one statement built once, no ORM object."""
    if not await _EXISTS.rows(connection, {"project_id": project_id}):
        raise NotFoundError(f"Project {project_id} does not exist.")


async def project_view(connection: AsyncConnection, project_id: UUID) -> schemas.Project:
    """The project as the api answers it, read as columns (`row_by_id`) on a bare connection."""
    rows = await _PROJECT_VIEW.rows(connection, {"id": project_id})
    if not rows:
        raise NotFoundError(f"Project {project_id} does not exist.")
    return struct_of(rows[0], schemas.Project)


class ProjectService(SQLAlchemyAsyncRepositoryService[Project]):
    class Repo(Repository[Project]):
        model_type = Project

    repository_type = Repo

    @property
    def events(self) -> EventService:
        return EventService.of(self.repository.session)

    async def get_project(self, project_id: UUID) -> Project:
        project: Project | None = await self.repository.session.get(Project, project_id)  # its statement built once
        if project is None:
            raise NotFoundError(f"Project {project_id} does not exist.")
        return project

    async def create_project(self, data: ProjectCreate, *, actor: str | None = None) -> Project:
        project = await self.create(msgspec.structs.asdict(data))
        await self.events.record(
            "project_created",
            project_id=project.id,
            actor=actor,
            data={"project_id": str(project.id), "name": project.name, "status": project.status},
        )
        return project

    async def update_project(self, project_id: UUID, data: ProjectUpdate, *, actor: str | None = None) -> Project:
        changes: dict[str, Any] = {
            name: value for name, value in msgspec.structs.asdict(data).items() if value is not msgspec.UNSET
        }
        # Lock the row: two concurrent PATCHes apply one after the other, each on the other's result.
        project: Project | None = await self.repository.get_one_or_none(Project.id == project_id, with_for_update=True)
        if project is None:
            raise NotFoundError(f"Project {project_id} does not exist.")
        if not changes:
            return project
        for name, value in changes.items():
            setattr(project, name, value)
        updated: Project = await self.repository.update(project)
        project = updated
        await self.events.record(
            "project_updated",
            project_id=project.id,
            actor=actor,
            data={"project_id": str(project.id), "changes": sorted(changes), "status": project.status},
        )
        return project

    async def list_page(
        self, *, limit: int, cursor: UUID | None, status: str | None, visible: frozenset[UUID] | None = None
    ) -> tuple[list[Project], UUID | None]:
        """One page in id order (UUIDv7: creation order); the cursor is the last id seen."""
        statement = select(Project)
        if status is not None:
            statement = statement.where(Project.status == status)
        if visible is not None:  # a token limited to some projects lists only those
            statement = statement.where(Project.id.in_(visible))
        return await keyset_page(self.repository.session, statement, Project.id, limit=limit, after=cursor)

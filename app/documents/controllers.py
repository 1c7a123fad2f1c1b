from __future__ import annotations

import re
from collections.abc import AsyncIterator
from enum import StrEnum
from uuid import UUID

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, Parameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.openapi import DOWNLOAD_KEY
from app.core.schema import Struct
from app.core.security import Principal, Role, needs
from app.documents.render import markdown_to_html
from app.documents.services import Document, DocumentService, export_zip
from app.projects.services import ProjectService

CHUNK = 64 * 1024
EXPORT_MEDIA_TYPES = ["text/markdown", "text/html", "application/zip"]


class ExportFormat(StrEnum):
    MD = "md"
    HTML = "html"
    ZIP = "zip"


class ProjectDocuments(Struct):
    project_id: UUID
    documents: list[Document]
    combined: Document


def provide_documents_service(db_session: NamedDependency[AsyncSession]) -> DocumentService:
    return DocumentService(db_session)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


def _file_name(project_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", project_name).strip("-").lower() or "project"


class DocumentController(Controller):
    path = "/api/v1/projects/{project_id:uuid}/documents"
    tags = ["documents"]
    opt = needs(Role.VIEWER)
    dependencies = {
        "documents_service": Provide(provide_documents_service, sync_to_thread=False),
        "projects_service": Provide(create_service_provider(ProjectService)),
    }

    @get("/", operation_id="GetProjectDocuments")
    async def get_documents(
        self,
        principal: NamedDependency[Principal],
        documents_service: NamedDependency[DocumentService],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
    ) -> ProjectDocuments:
        """Each stage's document (PRD, architecture, implementation plan, test report, deployment guide), and all."""
        principal.ensure_can_see(project_id)
        project = await projects_service.get_project(project_id)
        documents, combined = await documents_service.assemble(project)
        return ProjectDocuments(project_id=project_id, documents=documents, combined=combined)

    @get("/export", operation_id="ExportProjectDocuments", opt={DOWNLOAD_KEY: EXPORT_MEDIA_TYPES})
    async def export(
        self,
        principal: NamedDependency[Principal],
        documents_service: NamedDependency[DocumentService],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
        format: ExportFormat = Parameter(default=ExportFormat.MD, description="md, html or zip"),
    ) -> Stream:
        principal.ensure_can_see(project_id)
        project = await projects_service.get_project(project_id)
        documents, combined = await documents_service.assemble(project)
        name = _file_name(project.name)
        if format == ExportFormat.ZIP:
            files = await documents_service.source_files(project_id)
            data = export_zip(documents, combined, files, project.name)
            media_type, file_name = "application/zip", f"{name}.zip"
        elif format == ExportFormat.HTML:
            data = markdown_to_html(combined.markdown, combined.title).encode()
            media_type, file_name = "text/html", f"{name}.html"
        else:
            data = combined.markdown.encode()
            media_type, file_name = "text/markdown", f"{name}.md"
        return Stream(
            _chunks(data),
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{file_name}"', "Content-Length": str(len(data))},
        )

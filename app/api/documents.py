from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any
from uuid import UUID

import anyio
import anyio.to_thread
from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, Parameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.dependencies import SettingsDependency, service_provider
from app.config import ServerSettings
from app.core.openapi import DOWNLOAD_KEY
from app.core.schema import Struct
from app.core.security import Role, needs
from app.documents.services import (
    Document,
    DocumentService,
    ExportLimits,
    build_export,
)
from app.projects.services import ProjectService

CHUNK = 64 * 1024
EXPORT_MEDIA_TYPES = ["text/markdown", "text/html", "application/zip"]
EXPORT_LIMITER = "export_limiter"


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
        "projects_service": service_provider(ProjectService),
    }

    @get("/", operation_id="GetProjectDocuments")
    async def get_documents(
        self,
        documents_service: NamedDependency[DocumentService],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
    ) -> ProjectDocuments:
        """Each stage's document (PRD, architecture, implementation plan, test report, deployment guide), and all."""
        project = await projects_service.get_project(project_id)
        documents, combined = await documents_service.assemble(project)
        return ProjectDocuments(project_id=project_id, documents=documents, combined=combined)

    @get("/export", operation_id="ExportProjectDocuments", opt={DOWNLOAD_KEY: EXPORT_MEDIA_TYPES})
    async def export(
        self,
        app_settings: SettingsDependency,
        request: Request[Any, Any, Any],
        documents_service: NamedDependency[DocumentService],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
        format: ExportFormat = Parameter(default=ExportFormat.MD, description="md, html or zip"),
    ) -> Stream:
        """The documents as one Markdown file, one HTML page, or a zip with each document and the
        generated files. Larger than `BOTARMY_EXPORT_MAX_BYTES` / `_FILES`: 413 naming the limit."""
        project = await projects_service.get_project(project_id)
        server: ServerSettings = app_settings.server
        limits = ExportLimits(max_bytes=server.export_max_bytes, max_files=server.export_max_files)
        with_code = format == ExportFormat.ZIP
        await documents_service.check_export_size(project_id, with_code=with_code, limits=limits)
        name = _file_name(project.name)
        media_type, file_name = {
            ExportFormat.ZIP: ("application/zip", f"{name}.zip"),
            ExportFormat.HTML: ("text/html", f"{name}.html"),
            ExportFormat.MD: ("text/markdown", f"{name}.md"),
        }[format]
        # A few exports at a time, from reading the documents to the built file, so that their
        # memory is bounded; decoding the JSON, rendering and compressing are CPU work, in a worker
        # thread, never on the event loop, so that an export never stalls the requests of others.
        async with _export_limiter(request.app.state, server):
            rows = await documents_service.rows(project_id, with_code=with_code)
            build = functools.partial(build_export, rows, project.name, project.description, format.value, limits)
            data = await anyio.to_thread.run_sync(build)
        return Stream(
            _chunks(data),
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{file_name}"', "Content-Length": str(len(data))},
        )


def _export_limiter(state: State, server: ServerSettings) -> anyio.CapacityLimiter:
    """The app's limit on exports built at once (made on first use, on the app's event loop)."""
    limiter: anyio.CapacityLimiter | None = getattr(state, EXPORT_LIMITER, None)
    if limiter is None:
        limiter = anyio.CapacityLimiter(server.export_concurrency)
        setattr(state, EXPORT_LIMITER, limiter)
    return limiter

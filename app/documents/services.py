"""The project's documents: the latest version of each stage's artifacts, rendered through templates.

The stages and their templates are in `app.documents.stages`. Export: Markdown, a standalone HTML page, or a zip
of every document plus the generated source files in their folders.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePosixPath
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import Select, Text, and_, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.artifacts.models import Artifact, ArtifactType, Granularity
from app.core.exceptions import TooLargeError
from app.documents.html_page import markdown_to_html
from app.documents.render import render_markdown
from app.documents.stages import STAGES, STORIES_TEMPLATE, _stories, stage_template
from app.projects.models import Project


class Document(msgspec.Struct, kw_only=True):
    stage: str
    title: str
    filename: str
    artifact_ids: list[UUID]
    markdown: str


class StoredArtifact(msgspec.Struct, kw_only=True):
    """A live document-level artifact as an export reads it: decoded off the event loop."""

    id: UUID
    artifact_type: str
    task_id: UUID | None
    parent_id: UUID | None
    title: str
    content: Any


# (id, artifact_type, task_id, parent_id, title, content as JSON text): a row as the database gives it.
ArtifactRow = tuple[UUID, str, UUID | None, UUID | None, str, str]


class ProjectArtifacts:
    """A project's live documents, oldest first, and what is built from them: pure work, no I/O, so
    that an export does all of it (decoding the JSON included) in a worker thread."""

    def __init__(self, artifacts: list[StoredArtifact]) -> None:
        self.artifacts = artifacts

    @classmethod
    def decode(cls, rows: list[ArtifactRow]) -> ProjectArtifacts:
        return cls(
            [
                StoredArtifact(
                    id=row[0],
                    artifact_type=row[1],
                    task_id=row[2],
                    parent_id=row[3],
                    title=row[4],
                    content=msgspec.json.decode(row[5]),
                )
                for row in rows
            ]
        )

    def latest(self) -> dict[ArtifactType, StoredArtifact]:
        """The newest live document of each type (a later one supersedes an earlier one)."""
        return {ArtifactType(artifact.artifact_type): artifact for artifact in self.artifacts}

    def assemble(self, project_name: str, project_description: str) -> tuple[list[Document], Document]:
        latest = self.latest()
        documents: list[Document] = []
        for stage in STAGES:
            present = {kind: latest[kind] for kind in stage.artifact_types if kind in latest}
            if not present:
                continue
            template = stage_template(stage.template_file)
            section_values = stage.values({kind: artifact.content for kind, artifact in present.items()})
            documents.append(
                Document(
                    stage=stage.name,
                    title=template.name,
                    filename=template.output_filename or f"docs/{stage.name}.md",
                    artifact_ids=[artifact.id for artifact in present.values()],
                    markdown=render_markdown(template, {"project_name": project_name, "sections": section_values}),
                )
            )
        stories = self._stories(project_name)
        if stories is not None:
            documents.append(stories)
        combined = Document(
            stage="combined",
            title=f"{project_name}: all documents",
            filename="docs/all-documents.md",
            artifact_ids=[artifact_id for document in documents for artifact_id in document.artifact_ids],
            markdown=f"# {project_name}\n\n{project_description}\n\n"
            + "\n\n".join(_demote(document.markdown) for document in documents),
        )
        return documents, combined

    def _stories(self, project_name: str) -> Document | None:
        """The epics of the newest sharding (one task's) and the live stories under them."""
        kinds = (ArtifactType.EPIC.value, ArtifactType.STORY.value)
        rows = [artifact for artifact in self.artifacts if artifact.artifact_type in kinds]
        epics = [row for row in rows if row.artifact_type == ArtifactType.EPIC.value]
        if not epics:
            return None
        epics = [epic for epic in epics if epic.task_id == epics[-1].task_id]
        shown = {epic.id for epic in epics}
        stories = [row for row in rows if row.artifact_type == ArtifactType.STORY.value and row.parent_id in shown]
        template = stage_template(STORIES_TEMPLATE)
        return Document(
            stage="stories",
            title=template.name,
            filename=template.output_filename or "docs/stories.md",
            artifact_ids=[row.id for row in [*epics, *stories]],
            markdown=render_markdown(template, {"project_name": project_name, "sections": _stories(epics, stories)}),
        )

    def source_files(self) -> list[tuple[str, str]]:
        """(path, text) of every generated file: code, tests, container and run files."""
        # Code may come in several documents (a coder run per planned task): all of them, and where
        # two write the same path the later one wins.
        files: dict[str, str] = {}
        for code in self.artifacts:
            if code.artifact_type == ArtifactType.SOURCE_CODE.value:
                files |= {
                    f["path"]: f["content"] for f in code.content.get("files", []) + code.content.get("tests", [])
                }
        package = self.latest().get(ArtifactType.DEPLOYMENT_PACKAGE)
        if package is not None:
            files |= {
                f["path"]: f["content"]
                for f in package.content.get("container_files", []) + package.content.get("run_files", [])
            }
        return list(files.items())


# What an export reads: the newest document of each stage's types, every epic and story (the
# newest sharding is picked from them), and for a zip every source_code document (all are merged).
STAGE_KINDS = tuple(sorted({kind.value for stage in STAGES for kind in stage.artifact_types}))
STORY_KINDS = (ArtifactType.EPIC.value, ArtifactType.STORY.value)


def _read_ids(project_id: UUID, *, with_code: bool) -> Select[tuple[UUID]]:
    """The ids of the project's live documents an export (`with_code`: a zip) reads."""
    every_one = (*STORY_KINDS, ArtifactType.SOURCE_CODE.value) if with_code else STORY_KINDS
    newness = func.row_number().over(partition_by=Artifact.artifact_type, order_by=Artifact.id.desc())
    ranked = (
        select(Artifact.id, Artifact.artifact_type, newness.label("newness"))
        .where(
            Artifact.project_id == project_id,
            Artifact.deleted_at.is_(None),
            Artifact.granularity == Granularity.DOCUMENT.value,
            Artifact.artifact_type.in_((*STAGE_KINDS, *every_one)),
        )
        .subquery()
    )
    return select(ranked.c.id).where(
        or_(and_(ranked.c.newness == 1, ranked.c.artifact_type.in_(STAGE_KINDS)), ranked.c.artifact_type.in_(every_one))
    )


class DocumentService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def check_export_size(self, project_id: UUID, *, with_code: bool, limits: ExportLimits) -> None:
        """413 naming the limit when the stored documents an export would read (their JSON text) are
        larger than the limit: counted by the database, before anything is read into memory."""
        statement = select(func.coalesce(func.sum(func.length(cast(Artifact.content, Text))), 0)).where(
            Artifact.id.in_(_read_ids(project_id, with_code=with_code))
        )
        size = int((await self.session.execute(statement)).scalar_one())
        if size > limits.max_bytes:
            raise TooLargeError(
                f"The export would read {size} bytes of stored documents; at most {limits.max_bytes} are "
                "exported (BOTARMY_EXPORT_MAX_BYTES).",
                extra={"bytes": size, "max_bytes": limits.max_bytes},
            )

    async def rows(self, project_id: UUID, *, with_code: bool = False) -> list[ArtifactRow]:
        """The live documents an export (`with_code`: a zip) reads, oldest first, their content as JSON
        text: decoding a large project's JSON (tens of MB) is left to the caller, in a worker thread."""
        statement = (
            select(
                Artifact.id,
                Artifact.artifact_type,
                Artifact.task_id,
                Artifact.parent_id,
                Artifact.title,
                cast(Artifact.content, Text),
            )
            .where(Artifact.id.in_(_read_ids(project_id, with_code=with_code)))
            .order_by(Artifact.id)
        )
        return [_row(row) for row in (await self.session.execute(statement)).all()]

    async def assemble(self, project: Project) -> tuple[list[Document], Document]:
        artifacts = ProjectArtifacts.decode(await self.rows(project.id))
        return artifacts.assemble(project.name, project.description)


def _row(row: Any) -> ArtifactRow:
    return (row[0], row[1], row[2], row[3], row[4], row[5])


def _demote(markdown: str) -> str:
    """One level deeper, so that each document is a chapter of the combined one."""
    return "\n".join(
        f"#{line}" if line.startswith("#") and not line.startswith("######") else line for line in markdown.splitlines()
    )


def safe_member(path: str) -> str | None:
    """A zip member name under `src/`, normalised (`./x`, `x/`, `a//b` are `x`, `x`, `a/b`), or None for
    a path that would leave it or names no file."""
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or path.startswith(("/", "\\")) or ".." in parts or any(part != part.strip() for part in parts):
        return None
    return str(PurePosixPath("src", *parts))


class ExportLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_bytes: int
    max_files: int


def export_members(files: list[tuple[str, str]]) -> dict[str, str]:
    """The generated files as zip members: normalised, one member per path (the later file wins)."""
    members: dict[str, str] = {}
    for path, text in files:
        member = safe_member(path)
        if member is not None:
            members.pop(member, None)
            members[member] = text
    return members


def check_export(limits: ExportLimits, texts: list[str], file_count: int) -> None:
    """413 naming the limit when an export would be larger than the settings allow."""
    if file_count > limits.max_files:
        raise TooLargeError(
            f"The export would hold {file_count} files; at most {limits.max_files} are exported "
            "(BOTARMY_EXPORT_MAX_FILES).",
            extra={"files": file_count, "max_files": limits.max_files},
        )
    # UTF-8 takes at least one byte per character: the characters are a lower bound, found
    # without encoding anything, and a close one for the mostly ASCII text of documents and code.
    size = sum(len(text) for text in texts)
    if size > limits.max_bytes:
        raise TooLargeError(
            f"The export would hold {size} bytes of text; at most {limits.max_bytes} are exported "
            "(BOTARMY_EXPORT_MAX_BYTES).",
            extra={"bytes": size, "max_bytes": limits.max_bytes},
        )


def export_zip(documents: list[Document], combined: Document, members: dict[str, str], title: str) -> bytes:
    """The zip (CPU-bound: call it in a worker thread)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for document in [*documents, combined]:
            archive.writestr(document.filename, document.markdown)
            archive.writestr(
                document.filename.removesuffix(".md") + ".html", markdown_to_html(document.markdown, document.title)
            )
        for member, text in members.items():
            archive.writestr(member, text)
        archive.writestr("README.md", f"# {title}\n\nDocuments in `docs/`, generated files in `src/`.\n")
    return buffer.getvalue()


def build_export(
    rows: list[ArtifactRow], project_name: str, project_description: str, export_format: str, limits: ExportLimits
) -> bytes:
    """An export from the table's rows: decoding, rendering, the limits' check and the file itself.
    CPU-bound (a large project's JSON and its zip): call it in a worker thread."""
    artifacts = ProjectArtifacts.decode(rows)
    documents, combined = artifacts.assemble(project_name, project_description)
    if export_format == "zip":
        members = export_members(artifacts.source_files())
        texts = [*members.values(), *(document.markdown for document in [*documents, combined])]
        # Each document goes in twice (Markdown and HTML), with a README.
        check_export(limits, texts, len(members) + 2 * (len(documents) + 1) + 1)
        return export_zip(documents, combined, members, project_name)
    check_export(limits, [combined.markdown], 1)
    if export_format == "html":
        return markdown_to_html(combined.markdown, combined.title).encode()
    return combined.markdown.encode()

"""The context store: artifacts, their sections and versions, staleness and retention.

Writes here never commit: the caller's transaction holds the change and its events together.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import CTE, Text, TextClause, bindparam, cast, column, delete, insert, select, text
from sqlalchemy.orm import make_transient_to_detached

from app.artifacts.content import CONTENT_TYPES
from app.artifacts.models import Artifact, ArtifactType, ArtifactVersion, Granularity, search_text_of
from app.artifacts.schemas import ArtifactCreate, ArtifactMetadata, ArtifactUpdate
from app.artifacts.search import quoted_element
from app.core.exceptions import InvalidInputError, NotFoundError
from app.db.base import new_id
from app.db.repository import Repository
from app.db.rows import IF_COMPLETED, Along
from app.events.services import EventService, record_event

# Largest content of one artifact, encoded.
MAX_CONTENT_BYTES = 512 * 1024
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
_encoder = msgspec.json.Encoder()
# Core statements on the tables (the entities would make them ORM bulk inserts).
_INSERT_ARTIFACTS = insert(Artifact.__table__)  # type: ignore[arg-type]
_INSERT_VERSION = insert(ArtifactVersion.__table__)  # type: ignore[arg-type]
# Every attempt reads its context with it: built once (building it with its IN list and generating
# its cache key on each call was most of that read's CPU).
_LIVE_BY_IDS = select(Artifact).where(
    Artifact.project_id == bindparam("project_id"),
    Artifact.id.in_(bindparam("ids", expanding=True)),
    Artifact.deleted_at.is_(None),
)
# PostgreSQL: new artifacts' rows (each document, then its sections; `_artifact_rows`) ...
_INSERT_ARTIFACT_ROWS = """
        INSERT INTO artifact (
            id, project_id, task_id, parent_id, source_agent, artifact_type, granularity, title, content,
            version, metadata, stale, search_text, created_at, updated_at
        )
        SELECT r.id, r.project_id, r.task_id, r.parent_id, r.source_agent, r.artifact_type, r.granularity,
            r.title, r.content, 1, r.metadata, false, r.search_text, :stored_at, :stored_at
        FROM jsonb_to_recordset(CAST(:artifacts AS jsonb)) AS r(
            n int, id uuid, project_id uuid, task_id uuid, parent_id uuid, source_agent text, artifact_type text,
            granularity text, title text, content jsonb, metadata jsonb, search_text text
        )
        {guard}
        ORDER BY r.n
        RETURNING id, content
"""
# ... and the documents' first versions (`_version_rows`), after the CTE `artifacts` (the insert above):
# a version's content is its document's as inserted, not sent twice.
_INSERT_VERSION_ROWS = """
        INSERT INTO artifact_version (
            id, artifact_id, version, title, content, change_note, changed_by, created_at, updated_at
        )
        SELECT v.id, v.artifact_id, 1, v.title, a.content, v.change_note, v.changed_by, :stored_at, :stored_at
        FROM jsonb_to_recordset(CAST(:versions AS jsonb)) AS v(
            n int, id uuid, artifact_id uuid, title text, change_note text, changed_by text
        )
        JOIN artifacts AS a ON a.id = v.artifact_id
        ORDER BY v.n
"""


def _typed(statement: TextClause) -> TextClause:
    return statement.bindparams(bindparam("stored_at", type_=Artifact.__table__.c.created_at.type))


# PostgreSQL: both inserts in one statement.
_STORE_NEW = _typed(text(f"WITH artifacts AS ({_INSERT_ARTIFACT_ROWS.format(guard='')}) {_INSERT_VERSION_ROWS}"))
_ROW_FIELDS = (
    "id",
    "project_id",
    "task_id",
    "parent_id",
    "source_agent",
    "artifact_type",
    "granularity",
    "title",
    "content",
    "search_text",
)


def _artifact_rows(rows: list[dict[str, Any]]) -> str:
    """The JSON of `rows` for `_INSERT_ARTIFACT_ROWS`'s `artifacts` parameter, in order."""
    return _encoder.encode(
        [{"n": n, "metadata": row["meta"], **{key: row[key] for key in _ROW_FIELDS}} for n, row in enumerate(rows)]
    ).decode()


_VERSION_FIELDS = ("id", "artifact_id", "title", "change_note", "changed_by")


def _version_rows(versions: list[dict[str, Any]]) -> str:
    """The JSON of `versions` for `_INSERT_VERSION_ROWS`'s `versions` parameter, in order (no content)."""
    return _encoder.encode(
        [{"n": n, **{key: version[key] for key in _VERSION_FIELDS}} for n, version in enumerate(versions)]
    ).decode()


@functools.cache
def _inserts_along(guarded: bool) -> tuple[CTE, ...]:
    """PostgreSQL: both inserts as CTEs, for another write's statement (`NewArtifacts.along`);
    `guarded`: only if its completion changed its row (`IF_COMPLETED`)."""
    insert_rows = _INSERT_ARTIFACT_ROWS.format(guard=f"WHERE {IF_COMPLETED}" if guarded else "")
    artifacts = _typed(text(insert_rows)).columns(column("id"), column("content")).cte("artifacts")
    versions = _typed(text(_INSERT_VERSION_ROWS)).columns().cte("artifact_versions")
    return artifacts, versions


class NewArtifacts:
    """New artifacts' rows and first versions, held for another write's statement to insert (`along`,
    PostgreSQL): all of them in it, instead of a statement each before it."""

    def __init__(self, *, guarded: bool = False) -> None:
        self.rows: list[dict[str, Any]] = []
        self.versions: list[dict[str, Any]] = []
        self.stored_at = datetime.datetime.now(datetime.UTC)
        # For a statement that commits by itself: inserted only if its completion changed its row.
        self.guarded = guarded

    def along(self) -> Along | None:
        """The inserts and their values; None: nothing held."""
        if not self.rows:
            return None
        params = {
            "artifacts": _artifact_rows(self.rows),
            "versions": _version_rows(self.versions),
            "stored_at": self.stored_at,
        }
        return _inserts_along(self.guarded), params


# Attribute name -> column name, where they differ (`meta` is the column `metadata`).
_ARTIFACT_COLUMNS = {key: column.name for key, column in Artifact.__mapper__.columns.items()}


def _as_columns(row: dict[str, Any]) -> dict[str, Any]:
    return {_ARTIFACT_COLUMNS[key]: value for key, value in row.items()}


# What a section takes from its document.
_SECTION_INHERITS = ("project_id", "task_id", "source_agent", "artifact_type", "version")


def _section_rows(document: dict[str, Any], now: datetime.datetime) -> list[dict[str, Any]]:
    """The rows of a document's sections (`split_sections`), new or after a change of the document."""
    inherited = {key: document[key] for key in _SECTION_INHERITS}
    return [
        {
            **inherited,
            "id": new_id(Artifact),
            "parent_id": document["id"],
            "granularity": Granularity.SECTION.value,
            "title": section_title,
            "content": section_content,
            "meta": {"section_of": str(document["id"])},
            "stale": False,
            "stale_reason": None,
            "deleted_at": None,
            "search_text": search_text_of(section_title, section_content),
            "created_at": now,
            "updated_at": now,
        }
        for section_title, section_content in split_sections(document["content"])
    ]


def validate_content(artifact_type: ArtifactType, content: Any) -> Any:
    """The content as stored, or InvalidInputError naming the field and the reason."""
    if len(_encoder.encode(content)) > MAX_CONTENT_BYTES:
        raise InvalidInputError(f"content: larger than {MAX_CONTENT_BYTES} bytes")
    schema = CONTENT_TYPES.get(artifact_type)
    if schema is None:  # user input, HITL responses: free-form, already bounded in depth and size
        return content
    if not isinstance(content, dict):
        raise InvalidInputError(f"content: a {artifact_type.value} is a JSON object, not text")
    try:
        return msgspec.to_builtins(msgspec.convert(content, schema))
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"content: not a valid {artifact_type.value}: {exc}") from None


def split_sections(content: Any) -> list[tuple[str, Any]]:
    """A document's sections: each top-level field of structured content, or each heading of text."""
    if isinstance(content, dict):
        text = content.get("text") if set(content) <= {"text", "format"} else None
        if not isinstance(text, str):
            return [(key.replace("_", " ").capitalize(), {key: value}) for key, value in content.items() if value]
        content = text
    if not isinstance(content, str):
        return []
    headings = list(_HEADING.finditer(content))
    sections = []
    for index, heading in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else len(content)
        sections.append((heading.group(2)[:300], {"text": content[heading.end() : end].strip()}))
    return sections


class ArtifactService(SQLAlchemyAsyncRepositoryService[Artifact]):
    class Repo(Repository[Artifact]):
        model_type = Artifact

    repository_type = Repo

    @property
    def events(self) -> EventService:
        return EventService.of(self.repository.session)

    # -- reads -------------------------------------------------------------------------------

    async def get_artifact(self, artifact_id: UUID) -> Artifact:
        artifact: Artifact | None = await self.repository.session.get(Artifact, artifact_id)
        if artifact is None or artifact.deleted_at is not None:
            raise NotFoundError(f"Artifact {artifact_id} does not exist.")
        return artifact

    async def by_ids(self, project_id: UUID, artifact_ids: Sequence[UUID]) -> list[Artifact]:
        """The live artifacts of a project among `artifact_ids`, in the order asked for."""
        if not artifact_ids:
            return []
        params = {"project_id": project_id, "ids": list(artifact_ids)}
        found = {artifact.id: artifact for artifact in await self.repository.session.scalars(_LIVE_BY_IDS, params)}
        return [found[artifact_id] for artifact_id in artifact_ids if artifact_id in found]

    async def versions(self, artifact_id: UUID) -> list[ArtifactVersion]:
        await self.get_artifact(artifact_id)
        statement = (
            select(ArtifactVersion).where(ArtifactVersion.artifact_id == artifact_id).order_by(ArtifactVersion.version)
        )
        return list(await self.repository.session.scalars(statement))

    async def version(self, artifact_id: UUID, number: int) -> ArtifactVersion:
        await self.get_artifact(artifact_id)
        statement = select(ArtifactVersion).where(
            ArtifactVersion.artifact_id == artifact_id, ArtifactVersion.version == number
        )
        found: ArtifactVersion | None = await self.repository.session.scalar(statement)
        if found is None:
            raise NotFoundError(f"Artifact {artifact_id} has no version {number}.")
        return found

    async def tree(self, project_id: UUID) -> list[tuple[Artifact, list[Artifact]]]:
        statement = (
            select(Artifact)
            .where(Artifact.project_id == project_id, Artifact.deleted_at.is_(None))
            .order_by(Artifact.id)
        )
        rows = list(await self.repository.session.scalars(statement))
        children: dict[UUID, list[Artifact]] = {}
        for row in rows:
            if row.parent_id is not None:
                children.setdefault(row.parent_id, []).append(row)
        return [(row, children.get(row.id, [])) for row in rows if row.parent_id is None]

    # -- writes ------------------------------------------------------------------------------

    async def create_artifact(
        self, project_id: UUID, data: ArtifactCreate, *, actor: str, source_agent: str | None = None
    ) -> Artifact:
        content = validate_content(data.artifact_type, data.content)
        meta = await self._checked_meta(project_id, data.metadata or ArtifactMetadata())
        if data.parent_id is not None:
            parent: Artifact | None = await self.repository.session.get(Artifact, data.parent_id)
            if parent is None or parent.deleted_at is not None or parent.project_id != project_id:
                # The same answer for an unknown id and another project's: no existence oracle.
                raise NotFoundError(f"Artifact {data.parent_id} does not exist.")
        if data.granularity == Granularity.SECTION and data.parent_id is None:
            raise InvalidInputError("parent_id: a section needs the document it belongs to")
        return await self.store(
            project_id=project_id,
            task_id=None,
            source_agent=source_agent,
            artifact_type=data.artifact_type.value,
            title=data.title,
            content=content,
            meta=meta,
            granularity=data.granularity.value,
            parent_id=data.parent_id,
            changed_by=actor,
            event_type="artifact_created",
        )

    async def store_generated(
        self,
        *,
        project_id: UUID,
        task_id: UUID | None,
        source_agent: str,
        artifact_type: str,
        title: str,
        content: Any,
        meta: dict[str, Any],
        parent_id: UUID | None = None,
        later: NewArtifacts | None = None,
    ) -> Artifact:
        """A document an agent wrote (content already validated), with its sections; `parent_id`: the
        document it belongs under (a PRD's epics, an epic's stories). `later`: see `store`."""
        return await self.store(
            project_id=project_id,
            task_id=task_id,
            source_agent=source_agent,
            artifact_type=artifact_type,
            title=title,
            content=content,
            meta=meta,
            granularity=Granularity.DOCUMENT.value,
            parent_id=parent_id,
            changed_by=f"agent:{source_agent}",
            event_type="artifact_generated",
            later=later,
        )

    async def store(
        self,
        *,
        project_id: UUID,
        task_id: UUID | None,
        source_agent: str | None,
        artifact_type: str,
        title: str,
        content: Any,
        meta: dict[str, Any],
        granularity: str,
        parent_id: UUID | None,
        changed_by: str,
        event_type: str,
        later: NewArtifacts | None = None,
    ) -> Artifact:
        """A new artifact with its sections and first version, and its event (no commit). `later`
        (PostgreSQL): its rows are held there for a statement of the caller's to insert (the
        caller's next write, `NewArtifacts.along`) instead of being inserted now."""
        # Rows written with core INSERTs built once (the document and its sections, then its first
        # version), not through the unit of work: three flushes with their ORM bookkeeping were the
        # largest part of a worker's CPU per task. The document is then made a persistent object of
        # the session as if loaded, for callers that read or change it.
        session = self.repository.session
        now = later.stored_at if later is not None else datetime.datetime.now(datetime.UTC)
        document: dict[str, Any] = {
            "id": new_id(Artifact),
            "project_id": project_id,
            "task_id": task_id,
            "parent_id": parent_id,
            "source_agent": source_agent,
            "artifact_type": artifact_type,
            "granularity": granularity,
            "title": title,
            "content": content,
            "version": 1,
            "meta": meta,
            "stale": False,
            "stale_reason": None,
            "deleted_at": None,
            "search_text": search_text_of(title, content),
            "created_at": now,
            "updated_at": now,
        }
        rows = [document]
        if granularity == Granularity.DOCUMENT.value:
            rows.extend(_section_rows(document, now))
        version = {
            "id": new_id(ArtifactVersion),
            "artifact_id": document["id"],
            "version": 1,
            "title": title,
            "content": content,
            "change_note": "created",
            "changed_by": changed_by,
            "created_at": now,
            "updated_at": now,
        }
        # The dialect from the bind, not the connection: taking the connection begins the session's
        # transaction, and a caller that holds the rows (`later`) may write them outside one.
        postgresql = session.get_bind().dialect.name == "postgresql"
        if postgresql and later is not None:
            later.rows.extend(rows)
            later.versions.append(version)
        elif postgresql:
            # One round trip: the rows as one JSON parameter, the version inserted with them.
            params = {"artifacts": _artifact_rows(rows), "versions": _version_rows([version]), "stored_at": now}
            await session.execute(_STORE_NEW, params)
        else:
            await session.execute(_INSERT_ARTIFACTS, [_as_columns(row) for row in rows])
            await session.execute(_INSERT_VERSION, [version])
        artifact = Artifact(**document)
        make_transient_to_detached(artifact)
        if not (postgresql and later is not None):
            # Held rows are not written yet: their object stays out of the session, whose adding
            # would begin its transaction (the holder's statement may commit by itself).
            session.add(artifact)
        record_event(
            session,
            event_type,
            project_id=project_id,
            task_id=task_id,
            actor=changed_by,
            data={
                "artifact_id": str(artifact.id),
                "artifact_type": artifact_type,
                "source_agent": source_agent,
                "title": title,
                "granularity": granularity,
                "version": 1,
                "task_id": str(task_id) if task_id else None,
            },
        )
        return artifact

    async def update_artifact(self, artifact_id: UUID, data: ArtifactUpdate, *, actor: str) -> Artifact:
        """A new version; everything derived from this artifact becomes stale."""
        session = self.repository.session
        statement = select(Artifact).where(Artifact.id == artifact_id, Artifact.deleted_at.is_(None)).with_for_update()
        artifact: Artifact | None = await session.scalar(statement)
        if artifact is None:
            raise NotFoundError(f"Artifact {artifact_id} does not exist.")
        changed: list[str] = []
        if not isinstance(data.title, msgspec.UnsetType) and data.title != artifact.title:
            artifact.title = data.title
            changed.append("title")
        if not isinstance(data.content, msgspec.UnsetType):
            content = validate_content(ArtifactType(artifact.artifact_type), data.content)
            if content != artifact.content:
                artifact.content = content
                changed.append("content")
        if not isinstance(data.metadata, msgspec.UnsetType):
            artifact.meta = await self._checked_meta(artifact.project_id, data.metadata, own_id=artifact.id)
            changed.append("metadata")
        if not changed:
            return artifact
        artifact.version += 1
        artifact.updated_at = datetime.datetime.now(datetime.UTC)
        if "content" in changed:
            artifact.stale, artifact.stale_reason = False, None  # it is the fresh one now
        session.add(
            ArtifactVersion(
                artifact_id=artifact.id,
                version=artifact.version,
                title=artifact.title,
                content=artifact.content,
                change_note=data.change_note or f"changed {', '.join(changed)}",
                changed_by=actor,
            )
        )
        if "content" in changed and artifact.granularity == Granularity.DOCUMENT.value:
            await self._drop_sections(artifact.id)
            await self._add_sections(artifact)
        await self.events.record(
            "artifact_updated",
            project_id=artifact.project_id,
            actor=actor,
            data={"artifact_id": str(artifact.id), "version": artifact.version, "changed": changed, "by": actor},
        )
        if "content" in changed:
            await self._mark_dependents_stale(artifact)
        return artifact

    async def delete_artifact(self, artifact_id: UUID, *, actor: str) -> Artifact:
        """Soft: the row and its versions stay (the audit trail refers to them); reads no longer see it."""
        artifact = await self.get_artifact(artifact_id)
        now = datetime.datetime.now(datetime.UTC)
        artifact.deleted_at = now
        for section in await self._sections(artifact.id):
            section.deleted_at = now
        await self.events.record(
            "artifact_deleted",
            project_id=artifact.project_id,
            actor=actor,
            data={"artifact_id": str(artifact.id), "title": artifact.title, "by": actor},
        )
        return artifact

    async def purge(self, older_than_days: int, *, in_use: set[str], actor: str) -> tuple[int, int]:
        """Hard-delete artifacts older than that, except those `in_use` (ids as text) and their sections.
        `app.runs.retention` says which are in use (by an open task or a pending request)."""
        session = self.repository.session
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=older_than_days)
        candidates = list(
            await session.execute(
                select(Artifact.id, Artifact.project_id, Artifact.parent_id).where(Artifact.created_at < cutoff)
            )
        )
        if not candidates:
            return 0, 0
        kept = {row.id for row in candidates if str(row.id) in in_use}
        # A document in use keeps its sections too.
        doomed = [row for row in candidates if row.id not in kept and row.parent_id not in kept]
        by_project: dict[UUID, list[UUID]] = {}
        for row in doomed:
            by_project.setdefault(row.project_id, []).append(row.id)
        for project_id, ids in by_project.items():
            await session.execute(delete(ArtifactVersion).where(ArtifactVersion.artifact_id.in_(ids)))
            await session.execute(
                delete(Artifact).where(Artifact.id.in_(ids)).execution_options(synchronize_session=False)
            )
            await self.events.record(
                "artifacts_purged",
                project_id=project_id,
                actor=actor,
                data={"artifact_ids": [str(artifact_id) for artifact_id in ids], "older_than_days": older_than_days},
            )
        return len(doomed), len(candidates) - len(doomed)

    # -- helpers -----------------------------------------------------------------------------

    async def _checked_meta(
        self, project_id: UUID, meta: ArtifactMetadata, own_id: UUID | None = None
    ) -> dict[str, Any]:
        linked = {*meta.related_artifacts, *meta.derived_from}
        if own_id in linked:
            raise InvalidInputError("metadata: an artifact cannot be related to or derived from itself")
        if linked:
            found = set(
                await self.repository.session.scalars(
                    select(Artifact.id).where(
                        Artifact.project_id == project_id, Artifact.id.in_(linked), Artifact.deleted_at.is_(None)
                    )
                )
            )
            if missing := sorted(str(artifact_id) for artifact_id in linked - found):
                raise InvalidInputError(
                    f"metadata: related or derived-from artifacts not in this project: {', '.join(missing)}",
                    extra={"missing": missing},
                )
        return {
            "confidence": meta.confidence,
            "validation_status": meta.validation_status,
            "tags": list(meta.tags),
            "related_artifacts": [str(value) for value in meta.related_artifacts],
            "derived_from": [str(value) for value in meta.derived_from],
        }

    async def _sections(self, document_id: UUID) -> list[Artifact]:
        statement = select(Artifact).where(Artifact.parent_id == document_id, Artifact.deleted_at.is_(None))
        return list(await self.repository.session.scalars(statement))

    async def _drop_sections(self, document_id: UUID) -> None:
        now = datetime.datetime.now(datetime.UTC)
        for section in await self._sections(document_id):
            section.deleted_at = now

    async def _add_sections(self, document: Artifact) -> None:
        """Sections of a changed document (a new artifact's are written with it, in `store`)."""
        fields = {key: getattr(document, key) for key in ("id", "content", *_SECTION_INHERITS)}
        now = datetime.datetime.now(datetime.UTC)
        self.repository.session.add_all([Artifact(**row) for row in _section_rows(fields, now)])
        await self.repository.session.flush()

    async def _mark_dependents_stale(self, artifact: Artifact) -> None:
        statement = select(Artifact).where(
            Artifact.project_id == artifact.project_id,
            Artifact.deleted_at.is_(None),
            Artifact.id != artifact.id,
            cast(Artifact.meta["derived_from"], Text).like(quoted_element(str(artifact.id))),
        )
        reason = f"'{artifact.title}' changed (version {artifact.version})"
        for dependent in await self.repository.session.scalars(statement):
            dependent.stale, dependent.stale_reason = True, reason
            await self.events.record(
                "artifact_stale",
                project_id=artifact.project_id,
                data={"artifact_id": str(dependent.id), "reason": reason, "source_artifact_id": str(artifact.id)},
            )

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, event, inspect
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import UUIDv7AuditBase, enum_check


class ArtifactType(StrEnum):
    USER_INPUT = "user_input"
    PROJECT_PLAN = "project_plan"
    SOFTWARE_SPECIFICATION = "software_specification"
    SYSTEM_ARCHITECTURE = "system_architecture"
    IMPLEMENTATION_PLAN = "implementation_plan"
    SOURCE_CODE = "source_code"
    TEST_RESULTS = "test_results"
    DEPLOYMENT_LOG = "deployment_log"
    DEPLOYMENT_PACKAGE = "deployment_package"
    AGENT_OUTPUT = "agent_output"
    HITL_RESPONSE = "hitl_response"
    # A validation or review of other artifacts (PO checklist, QA review): never replaces what it reviews.
    REVIEW = "review"
    # A PRD sharded for development: epics are children of the PRD, stories children of their epic.
    EPIC = "epic"
    STORY = "story"


class Granularity(StrEnum):
    DOCUMENT = "document"
    SECTION = "section"
    CONCEPT = "concept"


class Artifact(UUIDv7AuditBase):
    """An entry of the context store; `version` counts its edits, kept in `artifact_version`."""

    __tablename__ = "artifact"
    __table_args__ = (
        enum_check("artifact_type", ArtifactType),
        enum_check("granularity", Granularity),
        Index("ix_artifact_project_id_artifact_type", "project_id", "artifact_type"),
        Index("ix_artifact_project_id_created_at", "project_id", "created_at"),
        Index("ix_artifact_parent_id", "parent_id"),
        # Lists are ordered by id: without this, a project's first page walks the primary key
        # through every older project's rows (bench/README.md, "Context store retrieval").
        Index("ix_artifact_project_id_id", "project_id", "id"),
        # Text search (`q`) is `search_text LIKE '%word%'`, which only a trigram index can serve.
        # PostgreSQL only (pg_trgm); SQLite scans one project's rows, which is fine at its scale.
        Index(
            "ix_artifact_search_text_trgm",
            "search_text",
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    project_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("project.id", ondelete="CASCADE"))
    task_id: Mapped[UUID | None] = mapped_column(GUID, ForeignKey("agent_task.id", ondelete="SET NULL"), nullable=True)
    parent_id: Mapped[UUID | None] = mapped_column(GUID, ForeignKey("artifact.id", ondelete="CASCADE"), nullable=True)
    source_agent: Mapped[str | None] = mapped_column(String(32), nullable=True)
    artifact_type: Mapped[str] = mapped_column(String(32))
    granularity: Mapped[str] = mapped_column(String(16), default=Granularity.DOCUMENT.value)
    title: Mapped[str] = mapped_column(String(300))
    content: Mapped[Any] = mapped_column(JsonB)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # confidence, validation_status, tags, related artifact ids
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JsonB, default=dict)
    stale: Mapped[bool] = mapped_column(Boolean, default=False)
    stale_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    deleted_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    # What text search reads: the title and every text of the content, lowercased (`search_text_of`),
    # kept up to date on every write. Searching it costs a LIKE per row, not a JSON-to-text conversion
    # and a lowercasing of the whole content (bench/README.md, "Context store retrieval").
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="", deferred=True)


def search_text_of(title: str, content: Any) -> str:
    """The searchable text of an artifact: its title and the strings and numbers of its content (not
    the JSON's keys or punctuation), one per line, lowercased as the search term is."""
    parts = [title]
    pending = [content]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict):
            pending.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            pending.extend(reversed(value))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(str(value))
    return "\n".join(parts).lower()


@event.listens_for(Artifact, "before_insert")
def _search_text_on_insert(_mapper: Any, _connection: Any, artifact: Artifact) -> None:
    artifact.search_text = search_text_of(artifact.title, artifact.content)


@event.listens_for(Artifact, "before_update")
def _search_text_on_update(_mapper: Any, _connection: Any, artifact: Artifact) -> None:
    state = inspect(artifact)
    if state.attrs.title.history.has_changes() or state.attrs.content.history.has_changes():
        artifact.search_text = search_text_of(artifact.title, artifact.content)


class ArtifactVersion(UUIDv7AuditBase):
    """A past (or the current) state of an artifact: what it said, what changed, who changed it."""

    __tablename__ = "artifact_version"
    __table_args__ = (UniqueConstraint("artifact_id", "version", name="uq_artifact_version_artifact_id_version"),)

    artifact_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("artifact.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(300))
    content: Mapped[Any] = mapped_column(JsonB)
    change_note: Mapped[str] = mapped_column(Text, default="")
    changed_by: Mapped[str] = mapped_column(String(100))

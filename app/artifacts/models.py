from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, func, literal_column
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
        # Text search (`q`) is `lower(...) LIKE '%word%'`, which only a trigram index can serve.
        # PostgreSQL only (pg_trgm); SQLite scans one project's rows, which is fine at its scale.
        Index(
            "ix_artifact_title_trgm",
            func.lower(literal_column("title")).label("title_lower"),
            postgresql_using="gin",
            postgresql_ops={"title_lower": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
        Index(
            "ix_artifact_content_trgm",
            func.lower(literal_column("content::text")).label("content_lower"),
            postgresql_using="gin",
            postgresql_ops={"content_lower": "gin_trgm_ops"},
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

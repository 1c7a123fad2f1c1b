from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, UnsetType

from app.artifacts.models import ArtifactType, Granularity
from app.core.schema import InputStruct, Struct, check_json_depth

Title = Annotated[str, Meta(min_length=1, max_length=300)]
Tag = Annotated[str, Meta(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_.:-]+$")]
ValidationStatus = Literal["unvalidated", "valid", "invalid", "needs_review"]
ChangeNote = Annotated[str, Meta(max_length=2000)]


class ArtifactMetadata(InputStruct, omit_defaults=True):
    confidence: Annotated[float, Meta(ge=0, le=1)] | None = None
    validation_status: ValidationStatus = "unvalidated"
    tags: Annotated[list[Tag], Meta(max_length=50)] = msgspec.field(default_factory=list)
    related_artifacts: Annotated[list[UUID], Meta(max_length=100)] = msgspec.field(default_factory=list)
    # What this artifact was made from: a new version of any of them makes this one stale.
    derived_from: Annotated[list[UUID], Meta(max_length=100)] = msgspec.field(default_factory=list)


class ArtifactCreate(InputStruct):
    artifact_type: ArtifactType
    title: Title
    # The schema of the artifact type for agent documents; any JSON object (or text) for user input.
    content: dict[str, Any] | str
    granularity: Granularity = Granularity.DOCUMENT
    parent_id: UUID | None = None
    metadata: ArtifactMetadata | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_json_depth("content", self.content)


class ArtifactUpdate(InputStruct, omit_defaults=True):
    """A new version: what changes, and why."""

    title: Title | UnsetType = UNSET
    content: dict[str, Any] | str | UnsetType = UNSET
    metadata: ArtifactMetadata | UnsetType = UNSET
    change_note: ChangeNote = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.content, UnsetType):
            check_json_depth("content", self.content)


class Artifact(Struct):
    id: UUID
    project_id: UUID
    task_id: UUID | None
    parent_id: UUID | None
    source_agent: str | None
    artifact_type: ArtifactType
    granularity: Granularity
    title: str
    content: Any
    version: int
    metadata: dict[str, Any]
    stale: bool
    stale_reason: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class ArtifactSummary(Struct):
    id: UUID
    project_id: UUID
    parent_id: UUID | None
    source_agent: str | None
    artifact_type: ArtifactType
    granularity: Granularity
    title: str
    version: int
    metadata: dict[str, Any]
    stale: bool
    stale_reason: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class ArtifactVersionSummary(Struct):
    version: int
    title: str
    change_note: str
    changed_by: str
    created_at: datetime.datetime


class ArtifactVersion(ArtifactVersionSummary):
    artifact_id: UUID
    content: Any


class ContextSection(Struct):
    id: UUID
    title: str
    stale: bool


class ContextDocument(Struct):
    id: UUID
    artifact_type: ArtifactType
    granularity: Granularity
    title: str
    version: int
    source_agent: str | None
    stale: bool
    sections: list[ContextSection]


class ContextTree(Struct):
    project_id: UUID
    documents: list[ContextDocument]


class PurgeResult(Struct):
    purged: int
    kept_referenced: int
    older_than_days: int

from __future__ import annotations

import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import Meta

from app.core.schema import InputStruct, Struct

StepIndex = Annotated[int, Meta(ge=0, le=9999)]
StepIndexText = Annotated[str, Meta(pattern=r"^\d{1,4}$")]


class ExecutionInputs(InputStruct):
    idea: Annotated[str, Meta(min_length=1, max_length=20_000)]
    # Indexes of optional steps to run (they are skipped otherwise, unless oversight is high):
    # `[8]` or `["8"]`, stored as text.
    include_optional: Annotated[list[StepIndex | StepIndexText], Meta(max_length=200)] = msgspec.field(
        default_factory=list
    )
    task_timeout_seconds: Annotated[int, Meta(ge=1, le=86_400)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.include_optional = [str(index) for index in self.include_optional]


class ExecutionStart(InputStruct):
    project_id: UUID
    workflow_id: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")]
    inputs: ExecutionInputs


class StepRun(Struct):
    """One task of a step: a step that `repeats` has one per item."""

    task_id: UUID
    task_status: str | None
    item: str | None
    artifact_ids: list[UUID]


class ExecutionStep(Struct):
    index: int
    agent: str | None
    agent_type: str | None
    phase: str
    status: str
    task_id: UUID | None
    task_status: str | None
    artifact_ids: list[UUID]
    runs: list[StepRun]
    # A question about the step's condition, waiting for a human (high oversight).
    request_id: UUID | None
    reason: str | None
    # What the step `requires` that neither an earlier step nor the project had when it started.
    missing_inputs: list[str]
    started_at: str | None
    finished_at: str | None


class Execution(Struct):
    id: UUID
    project_id: UUID
    workflow_id: str
    status: str
    current_step: str | None
    error: str | None
    steps: list[ExecutionStep]
    gates: dict[str, Any]
    variables: dict[str, Any]
    created_at: datetime.datetime
    updated_at: datetime.datetime
    finished_at: datetime.datetime | None


class ExecutionSummary(Struct):
    id: UUID
    project_id: UUID
    workflow_id: str
    status: str
    current_step: str | None
    created_at: datetime.datetime
    finished_at: datetime.datetime | None


class Completion(Struct):
    project_id: UUID
    project_status: str
    execution_id: UUID | None
    execution_status: str | None
    steps_done: int
    steps_total: int
    percentage: float
    current_phase: str | None

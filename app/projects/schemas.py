from __future__ import annotations

import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, UnsetType

from app.core.schema import InputStruct, Struct, check_json_depth
from app.projects.models import OversightLevel, ProjectStatus

ProjectName = Annotated[str, Meta(min_length=1, max_length=200)]
Description = Annotated[str, Meta(max_length=20_000)]
Budget = Annotated[int, Meta(ge=0, le=10**12)]
CostBudget = Annotated[float, Meta(ge=0, le=10**9)]
ProjectSettings = Annotated[dict[str, Any], Meta(max_length=100)]


def check_project_settings(settings: dict[str, Any]) -> None:
    """Free-form, but the keys the server reads must make sense (a 400 says which one does not)."""
    check_json_depth("settings", settings)
    threshold = settings.get("confidence_threshold")
    if "confidence_threshold" in settings and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1
    ):
        msg = "settings.confidence_threshold: a number from 0 to 1"
        raise ValueError(msg)
    limit = settings.get("call_cost_limit_usd")
    if "call_cost_limit_usd" in settings and (
        isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0
    ):
        msg = "settings.call_cost_limit_usd: a number of US dollars, 0 or more"
        raise ValueError(msg)


class Project(Struct):
    id: UUID
    name: str
    description: str
    status: ProjectStatus
    oversight_level: OversightLevel
    budget_tokens: int | None
    budget_cost_usd: float | None
    settings: dict[str, Any]
    created_at: datetime.datetime
    updated_at: datetime.datetime


class ProjectSummary(Struct):
    id: UUID
    name: str
    status: ProjectStatus
    oversight_level: OversightLevel
    created_at: datetime.datetime
    updated_at: datetime.datetime


class ProjectCreate(InputStruct):
    name: ProjectName
    description: Description = ""
    oversight_level: OversightLevel = OversightLevel.MEDIUM
    budget_tokens: Budget | None = None
    budget_cost_usd: CostBudget | None = None
    settings: ProjectSettings = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_project_settings(self.settings)


class ProjectUpdate(InputStruct, omit_defaults=True):
    name: ProjectName | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    status: ProjectStatus | UnsetType = UNSET
    oversight_level: OversightLevel | UnsetType = UNSET
    budget_tokens: Budget | UnsetType | None = UNSET
    budget_cost_usd: CostBudget | UnsetType | None = UNSET
    settings: ProjectSettings | UnsetType = UNSET

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.settings, UnsetType):
            check_project_settings(self.settings)


class ProjectStopped(Struct):
    project_id: UUID
    status: ProjectStatus
    executions_paused: int
    tasks_halted: int
    # At-most-once tasks cut off mid-attempt: each waits on a `task_failure` request.
    tasks_put_to_a_human: int


class ProjectResumed(Struct):
    project_id: UUID
    status: ProjectStatus
    tasks_queued: int


class TaskStatusRow(Struct):
    task_id: UUID
    agent_type: str
    status: str
    created_at: datetime.datetime
    updated_at: datetime.datetime


class ProjectTaskStatus(Struct):
    project_id: UUID
    tasks: list[TaskStatusRow]

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from app.core.schema import InputStruct, Struct
from app.tasks.models import AgentType, TaskStatus


class TaskCreate(InputStruct):
    agent_type: AgentType
    instructions: Annotated[str, Meta(min_length=1, max_length=100_000)]
    context_ids: Annotated[list[UUID], Meta(max_length=200)] = msgspec.field(default_factory=list)
    # Seconds the task may work before the sweep fails it; default BOTARMY_TASK_TIMEOUT_SECONDS.
    timeout_seconds: Annotated[int, Meta(ge=1, le=86_400)] | None = None


class StepBrief(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a workflow step asks of its task beyond the agent's defaults (stored on the task).

    `output_types`: the artifact types the step writes (its `creates`/`updates`, or `review` for a
    validation or review step). `persona_id`/`persona`: the BMAD agent file whose persona speaks
    (a Persona, as JSON). `task_file`/`task_text`: the step's `uses:` task (or template outline).
    `checklist`/`checklist_items`: its checklist, whose items come back as the review's findings.
    `reviews`: the artifacts a review step reviews. `parent_id`: the artifact what it writes belongs
    under (a PRD's epics, an epic's stories). `item`: the item of this run of a repeated step.
    """

    output_types: list[str] = msgspec.field(default_factory=list)
    persona_id: str | None = None
    persona: dict[str, Any] | None = None
    action: str | None = None
    task_file: str | None = None
    task_text: str | None = None
    checklist: str | None = None
    checklist_items: list[str] = msgspec.field(default_factory=list)
    reviews: list[str] = msgspec.field(default_factory=list)
    parent_id: str | None = None
    item: Any = None


class TaskSubmitted(Struct):
    task_id: UUID
    job_id: str | None
    status: Literal["submitted"] = "submitted"


class Task(Struct):
    id: UUID
    project_id: UUID
    agent_type: AgentType
    instructions: str
    context_ids: list[UUID]
    status: TaskStatus
    attempts: int
    timeout_seconds: int
    # Acts outside the server: an interrupted attempt is put to a human, never retried blindly.
    at_most_once: bool
    # A redo: the reviewer's comment it had to address, and the task whose result was rejected.
    feedback: str | None
    redo_of: UUID | None
    # An orchestrator task mediating the disagreement this task reported.
    mediates: UUID | None
    output: dict[str, Any] | None
    error: str | None
    job_id: str | None
    queued_at: datetime.datetime | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime

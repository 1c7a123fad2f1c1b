from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import UUIDv7AuditBase, enum_check


class ExecutionStatus(StrEnum):
    RUNNING = "running"
    WAITING_FOR_HITL = "waiting_for_hitl"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class HandoffStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class WorkflowExecution(UUIDv7AuditBase):
    __tablename__ = "workflow_execution"
    __table_args__ = (
        enum_check("status", ExecutionStatus),
        Index("ix_workflow_execution_project_id", "project_id"),
        Index("ix_workflow_execution_status", "status"),
    )

    project_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("project.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(String(200))
    # The definition as it was when the execution started: edits to the file do not move a running execution.
    definition: Mapped[dict[str, Any]] = mapped_column(JsonB)
    status: Mapped[str] = mapped_column(String(20), default=ExecutionStatus.RUNNING.value)
    current_step: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Each step's `app.workflows.state.StepState`, by step index.
    step_state: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    # The user's variables: the flags its steps set (a step's `condition` reads them).
    variables: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    # What the execution keeps for itself (gates, redos, pause): `app.workflows.state.ExecutionControl`.
    control: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict, server_default="{}")
    inputs: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    finished_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)


class Handoff(UUIDv7AuditBase):
    __tablename__ = "handoff"
    __table_args__ = (
        enum_check("status", HandoffStatus),
        Index("ix_handoff_project_id", "project_id"),
        Index("ix_handoff_workflow_execution_id", "workflow_execution_id"),
    )

    project_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("project.id", ondelete="CASCADE"))
    workflow_execution_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("workflow_execution.id", ondelete="CASCADE"), nullable=True
    )
    from_agent: Mapped[str] = mapped_column(String(32))
    to_agent: Mapped[str] = mapped_column(String(32))
    phase: Mapped[str] = mapped_column(String(16))
    instructions: Mapped[str] = mapped_column(Text, default="")
    context_ids: Mapped[list[str]] = mapped_column(JsonB, default=list)
    expected_outputs: Mapped[list[str]] = mapped_column(JsonB, default=list)
    status: Mapped[str] = mapped_column(String(16), default=HandoffStatus.PENDING.value)

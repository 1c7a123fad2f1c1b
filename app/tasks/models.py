from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import UUIDv7AuditBase, enum_check


class AgentType(StrEnum):
    ORCHESTRATOR = "orchestrator"
    ANALYST = "analyst"
    ARCHITECT = "architect"
    CODER = "coder"
    TESTER = "tester"
    DEPLOYER = "deployer"


class TaskStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    WORKING = "working"
    WAITING_FOR_HITL = "waiting_for_hitl"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_TASK_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class AgentTask(UUIDv7AuditBase):
    """One unit of agent work. Anything taskiq runs is a *job*; this is the task a job performs."""

    __tablename__ = "agent_task"
    __table_args__ = (
        enum_check("status", TaskStatus),
        enum_check("agent_type", AgentType),
        Index("ix_agent_task_project_id_created_at", "project_id", "created_at"),
        # The sweep looks for expired leases and stale pending tasks.
        Index("ix_agent_task_status_lease_expires_at", "status", "lease_expires_at"),
        Index("ix_agent_task_workflow_execution_id", "workflow_execution_id"),
    )

    project_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("project.id", ondelete="CASCADE"))
    agent_type: Mapped[str] = mapped_column(String(16))
    instructions: Mapped[str] = mapped_column(Text)
    context_ids: Mapped[list[str]] = mapped_column(JsonB, default=list)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    output: Mapped[dict[str, Any] | None] = mapped_column(JsonB, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=300)
    # The lease: who runs the task now, and until when that claim holds without a heartbeat.
    lease_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_expires_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    queued_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    started_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    finished_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    workflow_execution_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("workflow_execution.id", ondelete="SET NULL"), nullable=True
    )
    step_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Work with effects outside the server (deploy, push): never started twice without a human.
    at_most_once: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A redo of a rejected result: the reviewer's comment, and the task whose result was rejected.
    feedback: Mapped[str | None] = mapped_column(Text, nullable=True)
    redo_of: Mapped[UUID | None] = mapped_column(GUID, nullable=True)
    # An orchestrator task mediating a disagreement: the task that reported it.
    mediates: Mapped[UUID | None] = mapped_column(GUID, nullable=True)
    # A workflow step's brief (app.tasks.schemas.StepBrief): what it writes, as whom, from which
    # BMAD task file and checklist, and what it reviews. None: the agent's defaults.
    brief: Mapped[dict[str, Any] | None] = mapped_column(JsonB, nullable=True)

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from advanced_alchemy.types import GUID
from sqlalchemy import Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import UUIDv7AuditBase, enum_check


class AgentState(StrEnum):
    IDLE = "idle"
    WORKING = "working"
    WAITING_FOR_HITL = "waiting_for_hitl"
    ERROR = "error"


class AgentStatus(UUIDv7AuditBase):
    __tablename__ = "agent_status"
    __table_args__ = (
        enum_check("status", AgentState),
        UniqueConstraint("project_id", "agent_type", name="uq_agent_status_project_id_agent_type"),
    )

    project_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("project.id", ondelete="CASCADE"))
    agent_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(20), default=AgentState.IDLE.value)
    current_task_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("agent_task.id", ondelete="SET NULL"), nullable=True
    )


class LlmUsage(UUIDv7AuditBase):
    """One model call: what it cost and how it went."""

    __tablename__ = "llm_usage"
    __table_args__ = (
        Index("ix_llm_usage_project_id_created_at", "project_id", "created_at"),
        Index("ix_llm_usage_task_id", "task_id"),
    )

    project_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("project.id", ondelete="CASCADE"))
    task_id: Mapped[UUID | None] = mapped_column(GUID, ForeignKey("agent_task.id", ondelete="SET NULL"), nullable=True)
    agent_type: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(100))
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    outcome: Mapped[str] = mapped_column(String(32))

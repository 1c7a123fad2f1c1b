from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import UUIDv7AuditBase, enum_check


class HitlKind(StrEnum):
    PHASE_APPROVAL = "phase_approval"
    LOW_CONFIDENCE = "low_confidence"
    CONFLICT = "conflict"
    TASK_FAILURE = "task_failure"
    BUDGET = "budget"
    PRE_CALL = "pre_call"
    MANUAL = "manual"


class HitlStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    AMENDED = "amended"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class Urgency(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class HitlRequest(UUIDv7AuditBase):
    __tablename__ = "hitl_request"
    __table_args__ = (
        enum_check("kind", HitlKind),
        enum_check("status", HitlStatus),
        enum_check("urgency", Urgency),
        Index("ix_hitl_request_project_id_status", "project_id", "status"),
        Index("ix_hitl_request_status_expires_at", "status", "expires_at"),
    )

    project_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("project.id", ondelete="CASCADE"))
    task_id: Mapped[UUID | None] = mapped_column(GUID, ForeignKey("agent_task.id", ondelete="SET NULL"), nullable=True)
    workflow_execution_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("workflow_execution.id", ondelete="SET NULL"), nullable=True
    )
    step_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    question: Mapped[str] = mapped_column(Text)
    options: Mapped[list[str]] = mapped_column(JsonB, default=list)
    artifact_ids: Mapped[list[str]] = mapped_column(JsonB, default=list)
    urgency: Mapped[str] = mapped_column(String(8), default=Urgency.MEDIUM.value)
    assigned_role: Mapped[str] = mapped_column(String(32), default="product_owner")
    status: Mapped[str] = mapped_column(String(16), default=HitlStatus.PENDING.value)
    user_response: Mapped[Any | None] = mapped_column(JsonB, nullable=True)
    response_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    amended_content: Mapped[Any | None] = mapped_column(JsonB, nullable=True)
    responder: Mapped[str | None] = mapped_column(String(100), nullable=True)
    expiry_action: Mapped[str] = mapped_column(String(16), default="pause")
    expires_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    responded_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    warned_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)


class HitlHistory(UUIDv7AuditBase):
    """Every action on a request, kept forever."""

    __tablename__ = "hitl_history"
    __table_args__ = (Index("ix_hitl_history_request_id", "request_id"),)

    request_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("hitl_request.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)

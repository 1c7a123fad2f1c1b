from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import msgspec
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


class HoldKind(StrEnum):
    """What a request holds up; `hold_ref` says which one."""

    STEP = "step"  # a task of its own (ref: the task's step id, as `agent_task.step_id`)
    GATE = "gate"  # a phase gate of the execution (ref: its stage key, `design` or `design#2`)
    CONDITION = "condition"  # a step's condition, put to a person (ref: the step index)
    INTERRUPTED = "interrupted"  # an at-most-once task cut off mid-attempt (ref: its step id, may be empty)
    REVIEW = "review"  # a person's hold on a task or review of it (ref: the task's status then)


class HoldRef(msgspec.Struct, frozen=True):
    kind: HoldKind
    ref: str = ""

    @classmethod
    def of_step(cls, step_id: str | None) -> HoldRef | None:
        """A task's own step (None for a task of no step)."""
        return None if step_id is None else cls(HoldKind.STEP, step_id)

    @property
    def label(self) -> str:
        """As the API shows it (`step_id`): the step id of a task's step, else `kind:ref`."""
        return self.ref if self.kind == HoldKind.STEP else f"{self.kind.value}:{self.ref}"


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
        enum_check("hold_kind", HoldKind),
        Index("ix_hitl_request_project_id_status", "project_id", "status"),
        Index("ix_hitl_request_status_expires_at", "status", "expires_at"),
    )

    project_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("project.id", ondelete="CASCADE"))
    task_id: Mapped[UUID | None] = mapped_column(GUID, ForeignKey("agent_task.id", ondelete="SET NULL"), nullable=True)
    workflow_execution_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("workflow_execution.id", ondelete="SET NULL"), nullable=True
    )
    # What the request holds up (`hold`): none, or a kind and which one.
    hold_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    hold_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
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

    @property
    def hold(self) -> HoldRef | None:
        return None if self.hold_kind is None else HoldRef(HoldKind(self.hold_kind), self.hold_ref or "")

    @hold.setter
    def hold(self, hold: HoldRef | None) -> None:
        self.hold_kind = None if hold is None else hold.kind.value
        self.hold_ref = None if hold is None else hold.ref


class HitlHistory(UUIDv7AuditBase):
    """Every action on a request, kept forever."""

    __tablename__ = "hitl_history"
    __table_args__ = (Index("ix_hitl_history_request_id", "request_id"),)

    request_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("hitl_request.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)

from __future__ import annotations

from enum import StrEnum
from typing import Any

from advanced_alchemy.types import JsonB
from sqlalchemy import BigInteger, Float, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import UUIDv7AuditBase, enum_check


class ProjectStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OversightLevel(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Project(UUIDv7AuditBase):
    __tablename__ = "project"
    __table_args__ = (
        enum_check("status", ProjectStatus),
        enum_check("oversight_level", OversightLevel),
        Index("ix_project_status", "status"),
    )

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=ProjectStatus.ACTIVE.value)
    oversight_level: Mapped[str] = mapped_column(String(8), default=OversightLevel.MEDIUM.value)
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    budget_cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)

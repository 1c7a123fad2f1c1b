from __future__ import annotations

import datetime
from uuid import UUID

from app.core.schema import Struct


class UsageTotals(Struct):
    calls: int
    tokens_in: int
    tokens_out: int
    cost_usd: float


class UsageRow(Struct):
    calls: int
    tokens_in: int
    tokens_out: int
    cost_usd: float
    agent_type: str | None = None
    provider: str | None = None
    model: str | None = None


class UsageSummary(Struct):
    project_id: UUID
    total: UsageTotals
    by_agent: list[UsageRow]
    by_model: list[UsageRow]


class AgentStatusRow(Struct):
    project_id: UUID | None  # null: an agent with no work in any project (listed without ?project_id=)
    agent_type: str
    status: str
    current_task_id: UUID | None
    updated_at: datetime.datetime


class AgentStatusList(Struct):
    items: list[AgentStatusRow]

"""Agent status per project, model usage, and budgets.

Nothing here commits: callers put these writes in the transaction of the change they belong to.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence
from functools import cached_property
from typing import Any
from uuid import UUID

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import TextClause, and_, bindparam, func, insert, select, text
from uuid_utils.compat import uuid7

from app.agents.models import AgentState, AgentStatus, LlmUsage
from app.agents.schemas import AgentStatusRow, UsageRow, UsageSummary, UsageTotals
from app.events.outbox import INSERT_ORDERED_AFTER_CHANGED, write_pending_with
from app.events.services import EventService
from app.projects.models import Project
from app.tasks.models import AgentType

# The agent's row inserted, or updated if its status or task differs (`_status_upsert`).
_STATUS_UPSERT_SQL = """
        INSERT INTO agent_status (id, project_id, agent_type, status, current_task_id, created_at, updated_at)
        VALUES (:id, :project_id, :agent_type, :status, :task_id, :now, :now)
        ON CONFLICT (project_id, agent_type) DO UPDATE
        SET status = excluded.status, current_task_id = excluded.current_task_id, updated_at = excluded.updated_at
        WHERE agent_status.status <> excluded.status
           OR agent_status.current_task_id {distinct} excluded.current_task_id
        RETURNING id
"""


def _typed(statement: TextClause) -> TextClause:
    """The statement with its bind parameters typed as the columns they fill."""
    columns = AgentStatus.__table__.c
    return statement.bindparams(
        bindparam("id", type_=columns.id.type),
        bindparam("project_id", type_=columns.project_id.type),
        bindparam("task_id", type_=columns.current_task_id.type),
        bindparam("now", type_=columns.updated_at.type),
    )


@functools.cache
def _status_upsert(dialect: str) -> TextClause:
    """Insert the agent's row, or update it if its status or task differs; returns its id only then.

    Text, built once: SQLAlchemy's `on_conflict_do_update` construct has no cache key, so it was
    compiled anew on every call (with building it, about a tenth of a worker's CPU under a full
    queue; every task sets its agent's status twice). PostgreSQL and SQLite spell it alike but for
    "is distinct from".
    """
    distinct = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    # No value is formatted in, only one of two fixed words.
    return _typed(text(_STATUS_UPSERT_SQL.format(distinct=distinct)))


@functools.cache
def _status_upsert_and_events() -> TextClause:
    """PostgreSQL: `_status_upsert`, then the transaction's events (`write_pending_with`), one statement."""
    upsert = _STATUS_UPSERT_SQL.format(distinct="IS DISTINCT FROM")
    statement = text(  # fixed text, no value formatted in
        f"WITH status AS ({upsert}), changed AS (SELECT count(*) AS changed_rows FROM status)"  # noqa: S608
        + INSERT_ORDERED_AFTER_CHANGED
    )
    return _typed(statement)


# On the table: on the entity it would be an ORM bulk insert.
_INSERT_USAGE = insert(LlmUsage.__table__)  # type: ignore[arg-type]


class BudgetExceededError(Exception):
    """A call would pass a limit; the message says which and by how much."""

    def __init__(self, message: str, *, scope: str, limit: float, spent: float, estimate: float) -> None:
        super().__init__(message)
        self.scope = scope
        self.limit = limit
        self.spent = spent
        self.estimate = estimate


def budget_limits(
    project: Project, *, agent_type: str, task_id: UUID, task_token_limit: int | None
) -> list[tuple[str, str, float, UUID | None, str | None]]:
    """The limits a call of `agent_type` for `task_id` is held to: (scope, unit, limit, the scope's
    task, the scope's agent), only those set. None set: nothing to check, no query to make."""
    limits: list[tuple[str, str, float | None, UUID | None, str | None]] = [
        ("project", "tokens", project.budget_tokens, None, None),
        ("project", "cost", project.budget_cost_usd, None, None),
        ("task", "tokens", task_token_limit, task_id, None),
    ]
    per_agent = project.settings.get("agent_budgets", {}) if isinstance(project.settings, dict) else {}
    agent_limits = per_agent.get(agent_type, {}) if isinstance(per_agent, dict) else {}
    if isinstance(agent_limits, dict):
        limits.append(("agent", "tokens", agent_limits.get("tokens"), None, agent_type))
        limits.append(("agent", "cost", agent_limits.get("cost_usd"), None, agent_type))
    return [
        (scope, unit, float(limit), scope_task, scope_agent)
        for scope, unit, limit, scope_task, scope_agent in limits
        if limit is not None
    ]


class AgentService(SQLAlchemyAsyncRepositoryService[AgentStatus]):
    class Repo(SQLAlchemyAsyncRepository[AgentStatus]):
        model_type = AgentStatus

    repository_type = Repo

    @cached_property
    def events(self) -> EventService:
        """Made once per service (a service and its repository cost as much to build as a statement)."""
        return EventService(session=self.repository.session)

    # -- status ------------------------------------------------------------------------------

    async def set_status(
        self,
        project_id: UUID,
        agent_type: str,
        status: AgentState,
        *,
        task_id: UUID | None = None,
        last: bool = False,
    ) -> bool:
        """Upsert the agent's row; an event only when the status or the task changes. True: it changed.

        One statement (insert, or update if something differs): the row is locked from here to the
        commit, so callers make it their transaction's last write before the events. Every task of
        an agent in a project sets this row: a lock held across more round trips queues them all.

        `last`: nothing but the commit follows. On PostgreSQL the same statement then writes the
        transaction's events too (one round trip less, the order lock taken after the row lock);
        not for a transaction that writes or locks more afterwards.
        """
        session = self.repository.session
        connection = await session.connection()
        now = datetime.datetime.now(datetime.UTC)
        values = {
            "id": uuid7(),
            "project_id": project_id,
            "agent_type": agent_type,
            "status": status.value,
            "task_id": task_id,
            "now": now,
        }
        data = {"agent_type": agent_type, "status": status.value, "current_task_id": str(task_id) if task_id else None}
        if last and connection.dialect.name == "postgresql":
            event = self.events.event("agent_status_changed", project_id=project_id, task_id=task_id, data=data)
            statement = _status_upsert_and_events()
            changed: bool = await session.run_sync(write_pending_with, statement, values, event)
            return changed
        if (await session.execute(_status_upsert(connection.dialect.name), values)).first() is None:
            return False  # as it was
        await self.events.record("agent_status_changed", project_id=project_id, task_id=task_id, data=data)
        return True

    async def statuses(self, project_id: UUID | None, visible: frozenset[UUID] | None) -> Sequence[AgentStatus]:
        statement = select(AgentStatus).order_by(AgentStatus.project_id, AgentStatus.agent_type)
        if project_id is not None:
            statement = statement.where(AgentStatus.project_id == project_id)
        if visible is not None:
            statement = statement.where(AgentStatus.project_id.in_(visible))
        return list(await self.repository.session.scalars(statement))

    async def status_board(self, project: Project | None, visible: frozenset[UUID] | None) -> list[AgentStatusRow]:
        """Every agent, each at least once: its rows (one per project it has worked in, or only
        `project`'s), and `idle` for an agent with none (`project_id` null when no project is given)."""
        rows = await self.statuses(project.id if project else None, visible)
        items = [
            AgentStatusRow(
                project_id=row.project_id,
                agent_type=row.agent_type,
                status=row.status,
                current_task_id=row.current_task_id,
                updated_at=row.updated_at,
            )
            for row in rows
        ]
        present = {row.agent_type for row in rows}
        since = project.created_at if project else datetime.datetime.now(datetime.UTC)
        idle = [
            AgentStatusRow(
                project_id=project.id if project else None,
                agent_type=agent.value,
                status=AgentState.IDLE.value,
                current_task_id=None,
                updated_at=since,
            )
            for agent in AgentType
            if agent.value not in present
        ]
        if project is not None:
            return sorted(items + idle, key=lambda item: item.agent_type)
        return items + sorted(idle, key=lambda item: item.agent_type)

    # -- usage and budgets -------------------------------------------------------------------

    async def record_usage(self, **fields: Any) -> None:
        """Write one model call's row (no commit): a core INSERT built once, not an ORM object that
        the next statement's autoflush writes through the unit of work."""
        now = datetime.datetime.now(datetime.UTC)
        row = {"id": uuid7(), **fields, "created_at": now, "updated_at": now}
        await self.repository.session.execute(_INSERT_USAGE, [row])

    async def spent(
        self, project_id: UUID, *, agent_type: str | None = None, task_id: UUID | None = None
    ) -> tuple[int, float]:
        """Tokens (in + out) and USD spent so far in the project, or by one agent type or task in it."""
        statement = select(
            func.coalesce(func.sum(LlmUsage.tokens_in + LlmUsage.tokens_out), 0),
            func.coalesce(func.sum(LlmUsage.cost_usd), 0.0),
        ).where(LlmUsage.project_id == project_id)
        if agent_type is not None:
            statement = statement.where(LlmUsage.agent_type == agent_type)
        if task_id is not None:
            statement = statement.where(LlmUsage.task_id == task_id)
        tokens, cost = (await self.repository.session.execute(statement)).one()
        return int(tokens), float(cost)

    async def check_budget(
        self,
        project: Project,
        *,
        agent_type: str,
        task_id: UUID,
        estimate_tokens: int,
        estimate_cost: float,
        task_token_limit: int | None,
    ) -> None:
        """Raise BudgetExceededError if the call would pass a project, agent or task limit."""
        for scope, unit, limit, scope_task, scope_agent in budget_limits(
            project, agent_type=agent_type, task_id=task_id, task_token_limit=task_token_limit
        ):
            tokens, cost = await self.spent(project.id, agent_type=scope_agent, task_id=scope_task)
            spent, estimate = (float(tokens), float(estimate_tokens)) if unit == "tokens" else (cost, estimate_cost)
            if spent + estimate > float(limit):
                label = f"{scope} {unit} budget" + (f" of the {scope_agent}" if scope_agent else "")
                amount = f"{spent:g} spent + about {estimate:g} for this call > {float(limit):g}"
                raise BudgetExceededError(
                    f"The {label} would be exceeded: {amount}.",
                    scope=scope,
                    limit=float(limit),
                    spent=spent,
                    estimate=estimate,
                )

    async def usage_summary(self, project_id: UUID, *, until: datetime.datetime | None = None) -> UsageSummary:
        """The project's model calls, in total, by agent and by model (`until`: those made up to then)."""
        session = self.repository.session
        columns = (
            func.count(LlmUsage.id),
            func.coalesce(func.sum(LlmUsage.tokens_in), 0),
            func.coalesce(func.sum(LlmUsage.tokens_out), 0),
            func.coalesce(func.sum(LlmUsage.cost_usd), 0.0),
        )

        def totals(row: Any) -> UsageTotals:
            return UsageTotals(
                calls=int(row[0]), tokens_in=int(row[1]), tokens_out=int(row[2]), cost_usd=round(float(row[3]), 8)
            )

        where = LlmUsage.project_id == project_id
        if until is not None:
            where = and_(where, LlmUsage.created_at <= until)
        total = (await session.execute(select(*columns).where(where))).one()
        by_agent = await session.execute(
            select(LlmUsage.agent_type, *columns)
            .where(where)
            .group_by(LlmUsage.agent_type)
            .order_by(LlmUsage.agent_type)
        )
        by_model = await session.execute(
            select(LlmUsage.provider, LlmUsage.model, *columns)
            .where(where)
            .group_by(LlmUsage.provider, LlmUsage.model)
            .order_by(LlmUsage.provider, LlmUsage.model)
        )
        return UsageSummary(
            project_id=project_id,
            total=totals(total),
            by_agent=[UsageRow(agent_type=row[0], **_fields(totals(row[1:]))) for row in by_agent],
            by_model=[UsageRow(provider=row[0], model=row[1], **_fields(totals(row[2:]))) for row in by_model],
        )


def _fields(totals: UsageTotals) -> dict[str, Any]:
    return {
        "calls": totals.calls,
        "tokens_in": totals.tokens_in,
        "tokens_out": totals.tokens_out,
        "cost_usd": totals.cost_usd,
    }

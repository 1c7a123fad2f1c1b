"""Agent status per project, model usage, and budgets.

Nothing here commits: callers put these writes in the transaction of the change they belong to.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import (
    ARRAY,
    CTE,
    BigInteger,
    BindParameter,
    Select,
    TextClause,
    and_,
    bindparam,
    column,
    func,
    insert,
    literal_column,
    select,
    text,
)
from uuid_utils.compat import uuid7

from app.agents.models import AgentState, AgentStatus, LlmUsage
from app.agents.schemas import AgentStatusRow, UsageRow, UsageSummary, UsageTotals
from app.db.engine import self_committing_connection
from app.db.repository import Repository
from app.db.rows import IF_COMPLETED, Along
from app.events.outbox import (
    EVENT_ORDER_LOCK,
    EVENT_ROWS,
    INSERT_ORDERED_AFTER_CHANGED,
    ORDERED_AFTER_CHANGED,
    event_rows,
    insert_events_if_changed,
    take_pending,
    write_pending_with,
    written_in,
)
from app.events.services import new_event, record_event
from app.projects.models import Project
from app.tasks.leases import (
    CLAIM_MESSAGE,
    claim_parameters,
    claimed_cte,
    completed_cte,
    completion_message,
    completion_parameters,
    lease_of_claimed,
    task_of_completed,
)
from app.tasks.models import AgentTask, AgentType, TaskStatus
from app.tasks.moves import Lease, progress_data
from app.tasks.services import TaskService

# The agent's row (`{row}`, one row of its columns) inserted, or updated if its status or task differs
# (`_status_upsert`).
_STATUS_UPSERT_SQL = """
        INSERT INTO agent_status (id, project_id, agent_type, status, current_task_id, created_at, updated_at)
        {row}
        ON CONFLICT (project_id, agent_type) DO UPDATE
        SET status = excluded.status, current_task_id = excluded.current_task_id, updated_at = excluded.updated_at
        WHERE agent_status.status <> excluded.status
           OR agent_status.current_task_id {distinct} excluded.current_task_id
        RETURNING id
"""
_GIVEN_ROW = "VALUES (:id, :project_id, :agent_type, :status, :task_id, :now, :now)"


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
    return _typed(text(_STATUS_UPSERT_SQL.format(row=_GIVEN_ROW, distinct=distinct)))


@functools.cache
def _status_upsert_and_events() -> TextClause:
    """PostgreSQL: `_status_upsert`, then the transaction's events (`write_pending_with`), one statement."""
    upsert = _STATUS_UPSERT_SQL.format(row=_GIVEN_ROW, distinct="IS DISTINCT FROM")
    statement = text(  # fixed text, no value formatted in
        f"WITH status AS ({upsert}), changed AS (SELECT count(*) AS changed_rows FROM status)"  # noqa: S608
        + INSERT_ORDERED_AFTER_CHANGED
    )
    return _typed(statement)


# PostgreSQL, the start of an attempt in one statement (`_claim_with_status`): after the claim (the CTE
# `claimed`, `app.tasks.leases.claimed_cte`), the claimed task's agent set working on it (`{row}` of
# `_STATUS_UPSERT_SQL`), and the events of the bind parameter `event_rows` (the claim's, then the
# status change's) with the task's project and agent type, which the worker learns only from the claim.
_CLAIMED_ROW = (
    "SELECT :status_id, c.project_id, c.agent_type, :working, c.id, c.started_at, c.started_at FROM claimed AS c"
)
_CLAIM_EVENTS = """
    SELECT r.n, r.event_type, c.project_id, c.id AS task_id, r.actor,
        r.data || jsonb_build_object('agent_type', c.agent_type) AS data, r.created_at
    FROM claimed AS c, jsonb_to_recordset(CAST(:event_rows AS jsonb)) AS r(
        n int, event_type text, actor text, data jsonb, created_at timestamptz
    )"""


def _with_status_and_events(
    change: CTE,
    row: str,
    *,
    along: tuple[CTE, ...] = (),
    event_rows: CTE | None = None,
    binds: tuple[BindParameter[Any], ...] = (),
) -> Select[Any]:
    """PostgreSQL, one statement: the CTE `change` (a claim, a completion) and the rows of `along`;
    the agent's status (`row`: the `{row}` of `_STATUS_UPSERT_SQL`, selected from `change`, its
    parameters `status_id` and `binds`); then the events, of the CTE `event_rows` (named `r` in
    the insert) or else of the bind parameter `event_rows`. Returns the columns of `change` and the
    ids of the events written. `change` with no row: no row, nothing else written, no lock taken but
    its own. The order lock is taken last, after the row locks (as `INSERT_ORDERED_AFTER_CHANGED`)."""
    upsert = text(_STATUS_UPSERT_SQL.format(row=row, distinct="IS DISTINCT FROM")).bindparams(
        bindparam("status_id", type_=AgentStatus.__table__.c.id.type), *binds
    )
    status = upsert.columns(column("id")).cte("status")
    # `change.name` is one of our CTEs' fixed names, no value.
    changed_sql = f"SELECT count(*) AS changed_rows FROM status HAVING EXISTS (SELECT 1 FROM {change.name})"  # noqa: S608
    changed = text(changed_sql).columns(column("changed_rows")).cte("changed")
    ordered = text(ORDERED_AFTER_CHANGED).columns(column("changed_rows")).cte("ordered").prefix_with("MATERIALIZED")
    rows = f"{event_rows.name} AS r" if event_rows is not None else EVENT_ROWS
    events = text(insert_events_if_changed(rows)).columns(column("id")).cte("events")
    event_ids = literal_column("ARRAY(SELECT id FROM events ORDER BY id)", type_=ARRAY(BigInteger))
    from_rows = (event_rows,) if event_rows is not None else ()
    return select(*change.c, event_ids).add_cte(change, *along, status, changed, ordered, *from_rows, events)


@functools.cache
def _claim_with_status() -> Select[Any]:
    """PostgreSQL: the claim, the agent's status and both events in one statement
    (`_with_status_and_events`), returning the claimed task's and project's columns (`claimed_cte`)
    and the ids of the events written. Nothing claimed: no row, nothing else written, no lock taken."""
    claim_events = text(_CLAIM_EVENTS).columns(column("n")).cte("claim_events")
    return _with_status_and_events(claimed_cte(), _CLAIMED_ROW, event_rows=claim_events)


# PostgreSQL, the end of an attempt in one statement (`_finish_with_status`): after the completion (the
# CTE `completed`, `app.tasks.leases.completed_cte`) and the rows inserted along it, the agent's new
# status (`{row}` of `_STATUS_UPSERT_SQL`), then the events of the bind parameter `event_rows`.
_COMPLETED_ROW = (
    "SELECT :status_id, c.project_id, c.agent_type, :agent_state, :agent_task_id, c.updated_at, c.updated_at"
    " FROM completed AS c"
)


@functools.cache
def _finish_with_status(along: tuple[CTE, ...]) -> Select[Any]:
    """PostgreSQL: the completion, the rows of `along` (guarded: `IF_COMPLETED`), the agent's status and
    the events in one statement (`_with_status_and_events`), returning the task's columns
    (`completed_cte`) and the ids of the events written. Lease gone: no row, nothing written."""
    agent_task = bindparam("agent_task_id", type_=AgentStatus.__table__.c.current_task_id.type)
    return _with_status_and_events(completed_cte(), _COMPLETED_ROW, along=along, binds=(agent_task,))


def _status_data(agent_type: str, status: AgentState, task_id: UUID | None) -> dict[str, Any]:
    """The payload of an `agent_status_changed` event."""
    return {"agent_type": agent_type, "status": status.value, "current_task_id": str(task_id) if task_id else None}


# On the table: on the entity it would be an ORM bulk insert.
_INSERT_USAGE = insert(LlmUsage.__table__)  # type: ignore[arg-type]


def _usage_row(fields: dict[str, Any]) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC)
    return {"id": uuid7(), **fields, "created_at": now, "updated_at": now}


@functools.cache
def _usage_cte(guarded: bool) -> CTE:
    """PostgreSQL: `_INSERT_USAGE` as a CTE, its values the bind parameters `usage_<column>` (null if
    not given, as the columns `_usage_row` has not); `guarded`: only if its completion changed its
    row (`IF_COMPLETED`)."""
    columns = LlmUsage.__table__.columns
    values = {column.name: bindparam(f"usage_{column.name}", None, type_=column.type) for column in columns}
    if not guarded:
        return _INSERT_USAGE.values(values).cte("usage")
    row = select(*values.values()).where(text(IF_COMPLETED))
    return _INSERT_USAGE.from_select(list(values), row).cte("usage")


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
    class Repo(Repository[AgentStatus]):
        model_type = AgentStatus

    repository_type = Repo

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
        data = _status_data(agent_type, status, task_id)
        if last and connection.dialect.name == "postgresql":
            event = new_event("agent_status_changed", project_id=project_id, task_id=task_id, data=data)
            statement = _status_upsert_and_events()
            changed: bool = await session.run_sync(write_pending_with, statement, values, event)
            return changed
        if (await session.execute(_status_upsert(connection.dialect.name), values)).first() is None:
            return False  # as it was
        record_event(session, "agent_status_changed", project_id=project_id, task_id=task_id, data=data)
        return True

    async def start_attempt(self, task_id: UUID, lease_seconds: float) -> Lease | None:
        """Claim the task (`TaskLeases.claim`) and set its agent working on it, with both events; commits.
        None: not claimable (done, cancelled, held by a live worker, or its project stopped).

        On PostgreSQL one statement (`_claim_with_status`), run outside a transaction block when the
        session has not begun one: it commits by itself, one round trip instead of four (BEGIN, the
        claim, the status with the events, COMMIT), and the order lock is held only while the server
        runs and commits it. Elsewhere the claim, then the status, in one transaction.
        """
        session = self.repository.session
        if session.get_bind().dialect.name != "postgresql":
            lease = await TaskService(session=session).claim(task_id, lease_seconds, commit=False)
            if lease is not None:
                task = lease.task
                await self.set_status(task.project_id, task.agent_type, AgentState.WORKING, task_id=task_id, last=True)
            await session.commit()
            return lease
        connection = await self_committing_connection(session)
        params = claim_parameters(task_id, lease_seconds)
        # The agent type and the project are filled in by the statement (`_CLAIM_EVENTS`), then here.
        events = [
            new_event(
                "task_progress_updated",
                project_id=None,
                task_id=task_id,
                data=progress_data(task_id, "", TaskStatus.WORKING.value, CLAIM_MESSAGE, 0),
            ),
            new_event(
                "agent_status_changed",
                project_id=None,
                task_id=task_id,
                data=_status_data("", AgentState.WORKING, task_id),
            ),
        ]
        values = {
            **params,
            "status_id": uuid7(),
            "working": AgentState.WORKING.value,
            "event_order_lock": EVENT_ORDER_LOCK,
            "event_rows": event_rows(events),
            "always_written": 1,  # the claim's; the status change's only if the row changed
        }
        row = (await connection.execute(_claim_with_status(), values)).first()
        if row is None:
            await session.commit()
            return None
        lease = lease_of_claimed(row, params["token"])
        ids: list[int] = row[-1]
        for event in events:
            event.project_id = lease.task.project_id
            event.data["agent_type"] = lease.task.agent_type
        written_in(session.sync_session, events[: len(ids)], ids)
        await session.commit()  # publishes the events (nothing is sent outside a transaction block)
        return lease

    async def finish_attempt(
        self,
        lease: Lease,
        output: dict[str, Any],
        *,
        agent_state: AgentState,
        along: Along | None = None,
        status: TaskStatus = TaskStatus.COMPLETED,
    ) -> AgentTask | None:
        """Finish the attempt (`TaskLeases.complete`, with the rows of `along`) and set its agent to
        `agent_state`, with the events recorded so far and theirs; commits. None: the lease is gone,
        nothing is written (the session rolled back). For an attempt after which nothing else is
        written; `along` guarded (`IF_COMPLETED`).

        On PostgreSQL one statement (`_finish_with_status`), run outside a transaction block when the
        session has not begun one, as `start_attempt`: the agent's row, which every attempt of the
        agent in the project writes at its start and end, is then locked only while the server runs
        and commits the statement, not across the round trip of a COMMIT and the wait of the worker's
        event loop for it (where under load the attempts of a worker queued behind each other).
        Its events are made before the statement: the caller keeps the task's other writes (the
        watcher's heartbeat) from committing in between (`AgentExecutor.heartbeat`), or their events
        would have smaller ids and later times.
        """
        session = self.repository.session
        task = lease.task
        names_task = task.id if agent_state != AgentState.IDLE else None
        if session.get_bind().dialect.name != "postgresql":
            finished = await TaskService(session=session).complete(lease, output, status=status, commit=False)
            if finished is None:
                await session.rollback()
                return None
            await self.set_status(task.project_id, task.agent_type, agent_state, task_id=names_task, last=True)
            await session.commit()
            return finished
        connection = await self_committing_connection(session)
        message, progress = completion_message(status)
        pending = take_pending(session.sync_session)
        events = [
            *pending,
            new_event(
                "task_progress_updated",
                project_id=task.project_id,
                task_id=task.id,
                data=progress_data(task.id, task.agent_type, status.value, message, progress),
            ),
            new_event(
                "agent_status_changed",
                project_id=task.project_id,
                task_id=names_task,
                data=_status_data(task.agent_type, agent_state, names_task),
            ),
        ]
        values = {
            **completion_parameters(lease, output, status, None),
            **(along[1] if along is not None else {}),
            "status_id": uuid7(),
            "agent_state": agent_state.value,
            "agent_task_id": names_task,
            "event_order_lock": EVENT_ORDER_LOCK,
            "event_rows": event_rows(events),
            "always_written": len(pending) + 1,  # all but the status change's, written only if the row changed
        }
        statement = _finish_with_status(along[0] if along is not None else ())
        row = (await connection.execute(statement, values)).first()
        if row is None:
            await session.rollback()
            return None
        ids: list[int] = row[-1]
        written_in(session.sync_session, events[: len(ids)], ids)
        await session.commit()  # publishes the events
        return task_of_completed(row)

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
        await self.repository.session.execute(_INSERT_USAGE, [_usage_row(fields)])

    async def record_usage_along(self, *, guarded: bool = False, **fields: Any) -> Along | None:
        """`record_usage`, but on PostgreSQL written by the transaction's next statement that takes it
        (`TaskLeases.complete`'s `along`): one round trip less. None: written now (SQLite).
        `guarded`: for `finish_attempt`, written only if the task's completion changes its row."""
        # The dialect from the bind: taking the connection would begin a transaction.
        if self.repository.session.get_bind().dialect.name != "postgresql":
            await self.record_usage(**fields)
            return None
        row = _usage_row(fields)
        return (_usage_cte(guarded),), {f"usage_{key}": value for key, value in row.items()}

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

"""The lease rules that make delivery at-least-once and completion exactly-once, on both databases."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.agents.models import AgentState, AgentStatus, LlmUsage
from app.agents.services import AgentService
from app.artifacts.models import Artifact
from app.artifacts.services import ArtifactService, NewArtifacts
from app.config import Settings
from app.core.broker import build_broker
from app.core.runtime import Runtime
from app.db.engine import build_db_config, upgrade_database
from app.db.rows import along_together
from app.events.models import Event
from app.projects.models import Project
from app.tasks.models import AgentTask, AgentType, TaskStatus
from app.tasks.schemas import TaskCreate
from app.tasks.services import Lease, TaskService


@pytest.fixture
async def runtime(isolated_settings: Settings) -> AsyncIterator[Runtime]:
    settings = isolated_settings
    if settings.db.is_sqlite:
        await asyncio.to_thread(upgrade_database, settings.db)
    config = build_db_config(settings.db)
    yield Runtime(settings=settings, db_config=config, broker=build_broker(settings))
    await config.get_engine().dispose()


async def stored_task(runtime: Runtime) -> AgentTask:
    async with runtime.session() as session:
        project = Project(name="leases")
        session.add(project)
        await session.commit()
        service = TaskService(session=session)
        task = await service.create_task(project.id, TaskCreate(agent_type=AgentType.CODER, instructions="x"))
        await session.commit()
        return task


async def test_only_one_of_many_concurrent_claims_wins(runtime: Runtime) -> None:
    task = await stored_task(runtime)

    async def claim() -> bool:
        async with runtime.session() as session:
            return await TaskService(session=session).claim(task.id, 30) is not None

    results = await asyncio.gather(*(claim() for _ in range(8)))
    assert results.count(True) == 1
    async with runtime.session() as session:
        stored = await session.get_one(AgentTask, task.id)
        assert stored.status == TaskStatus.WORKING
        assert stored.attempts == 1


class RecordingEnqueue:
    """Stands in for the broker where only the service's choice of tasks is under test."""

    def __init__(self) -> None:
        self.calls: list[tuple[uuid.UUID, str]] = []

    async def __call__(self, task_id: uuid.UUID, job_id: str) -> None:
        self.calls.append((task_id, job_id))


async def sweep(runtime: Runtime, enqueue: RecordingEnqueue, **kwargs: float) -> int:
    async with runtime.session() as session:
        return await TaskService(session=session).sweep(
            enqueue,
            pending_after=kwargs.get("pending_after", 3600.0),
            queued_after=kwargs.get("queued_after", 3600.0),
        )


async def test_expired_lease_is_requeued_and_old_holder_cannot_finish(runtime: Runtime) -> None:
    task = await stored_task(runtime)
    enqueue = RecordingEnqueue()
    async with runtime.session() as session:
        first = await TaskService(session=session).claim(task.id, 30)
    assert first is not None
    # A live lease cannot be taken over.
    async with runtime.session() as session:
        assert await TaskService(session=session).claim(task.id, 30) is None
    assert await sweep(runtime, enqueue) == 0

    # The worker stops heartbeating: its lease runs out.
    async with runtime.session() as session:
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
        await session.execute(update(AgentTask).where(AgentTask.id == task.id).values(lease_expires_at=past))
        await session.commit()
    assert await sweep(runtime, enqueue) == 1
    assert [task_id for task_id, _ in enqueue.calls] == [task.id]
    async with runtime.session() as session:
        second = await TaskService(session=session).claim(task.id, 30)
    assert second is not None

    async with runtime.session() as session:
        service = TaskService(session=session)
        assert not await service.renew_lease(first, 30)
        assert await service.complete(first, {"by": "old"}) is None
        assert await service.complete(second, {"by": "new"}) is not None
        assert await service.complete(second, {"by": "new again"}) is None
    async with runtime.session() as session:
        stored = await session.get_one(AgentTask, task.id)
        assert (stored.status, stored.output, stored.attempts) == ("completed", {"by": "new"}, 2)
        completions = await session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.task_id == task.id, Event.data["status"].as_string() == "completed")
        )
        assert completions == 1


async def test_lost_race_writes_no_event(runtime: Runtime) -> None:
    task = await stored_task(runtime)
    enqueue = RecordingEnqueue()
    pending = [TaskStatus.PENDING]
    async with runtime.session() as session:
        before = await session.scalar(select(func.count()).select_from(Event).where(Event.task_id == task.id))
        service = TaskService(session=session)
        first = await service.dispatch(task.id, pending, enqueue)
        assert first is not None
        assert await service.dispatch(task.id, pending, enqueue) is None  # no longer pending
        after = await session.scalar(select(func.count()).select_from(Event).where(Event.task_id == task.id))
        assert after == (before or 0) + 1
        stored = await session.get_one(AgentTask, task.id)
        assert (stored.status, stored.job_id) == ("queued", first)
    assert enqueue.calls == [(task.id, first)]


async def test_broker_outage_puts_the_task_back_to_pending_for_the_sweep(runtime: Runtime) -> None:
    task = await stored_task(runtime)

    async def broker_down(task_id: uuid.UUID, job_id: str) -> None:
        raise ConnectionError("connection refused")

    async with runtime.session() as session:
        with pytest.raises(ConnectionError):
            await TaskService(session=session).dispatch(task.id, [TaskStatus.PENDING], broker_down)
    async with runtime.session() as session:
        stored = await session.get_one(AgentTask, task.id)
        assert (stored.status, stored.job_id) == ("pending", None)
    enqueue = RecordingEnqueue()
    assert await sweep(runtime, enqueue, pending_after=3600) == 0  # not stale yet
    assert await sweep(runtime, enqueue, pending_after=0) == 1
    assert [task_id for task_id, _ in enqueue.calls] == [task.id]
    assert await sweep(runtime, enqueue, queued_after=0) == 1  # queued too long: sent again
    assert len(enqueue.calls) == 2 and enqueue.calls[0][1] != enqueue.calls[1][1]


async def test_an_attempt_starts_with_its_agent_working_and_both_events(runtime: Runtime) -> None:
    task = await stored_task(runtime)
    async with runtime.session() as session:
        lease = await AgentService(session=session).start_attempt(task.id, 30)
    assert lease is not None
    assert (lease.task.status, lease.task.attempts, lease.task.agent_type) == ("working", 1, "coder")
    assert lease.project is None or lease.project.id == task.project_id  # read by the claim on PostgreSQL
    async with runtime.session() as session:
        assert await AgentService(session=session).start_attempt(task.id, 30) is None  # held by a live lease
        status = await session.scalar(select(AgentStatus).where(AgentStatus.project_id == task.project_id))
        assert status is not None and (status.status, status.current_task_id) == ("working", task.id)
        events = list(await session.scalars(select(Event).where(Event.task_id == task.id).order_by(Event.id)))
    started = [(event.event_type, event.project_id, event.data) for event in events[1:]]  # after task_created
    assert started == [
        (
            "task_progress_updated",
            task.project_id,
            {
                "task_id": str(task.id),
                "agent_type": "coder",
                "status": "working",
                "message": "working",
                "progress_percentage": 0,
            },
        ),
        (
            "agent_status_changed",
            task.project_id,
            {"agent_type": "coder", "status": "working", "current_task_id": str(task.id)},
        ),
    ]


def usage_of(task: AgentTask) -> dict[str, Any]:
    """The fields of a model call's usage row for `task`."""
    return {
        "project_id": task.project_id,
        "task_id": task.id,
        "agent_type": "coder",
        "provider": "offline",
        "model": "offline-1",
        "tokens_in": 10,
        "tokens_out": 20,
        "cost_usd": 0.0,
        "latency_ms": 1.0,
        "outcome": "success",
    }


async def test_a_usage_row_along_a_completion_is_written_only_with_it(runtime: Runtime) -> None:
    task = await stored_task(runtime)
    usage = usage_of(task)

    async def complete(lease: Lease) -> bool:
        async with runtime.session() as session:
            along = await AgentService(session=session).record_usage_along(**usage)
            finished = await TaskService(session=session).complete(
                lease, {"by": lease.token}, along=along, commit=False
            )
            if finished is None:
                await session.rollback()
                return False
            await session.commit()
            return True

    async with runtime.session() as session:
        first = await AgentService(session=session).start_attempt(task.id, 30)
    assert first is not None
    stale = Lease(first.task, "a lease that is gone")
    assert not await complete(stale)
    async with runtime.session() as session:
        assert await session.scalar(select(func.count()).select_from(LlmUsage)) == 0  # rolled back with it
    assert await complete(first)
    async with runtime.session() as session:
        rows = list(await session.scalars(select(LlmUsage)))
    assert [(row.task_id, row.tokens_in, row.tokens_out) for row in rows] == [(task.id, 10, 20)]


async def finish_alone(runtime: Runtime, lease: Lease, *, title: str = "notes") -> AgentTask | None:
    """End an attempt as the executor does when nothing follows it: a usage row and a document held
    for the completion's statement, then `finish_attempt`."""
    async with runtime.session() as session:
        agents = AgentService(session=session)
        usage = await agents.record_usage_along(guarded=True, **usage_of(lease.task))
        held = NewArtifacts(guarded=True)
        await ArtifactService(session=session).store_generated(
            project_id=lease.task.project_id,
            task_id=lease.task.id,
            source_agent="coder",
            artifact_type="agent_output",
            title=title,
            content={"text": "# Notes\n\nDone."},
            meta={},
            later=held,
        )
        along = along_together(usage, held.along())
        return await agents.finish_attempt(lease, {"summary": "done"}, agent_state=AgentState.IDLE, along=along)


async def test_an_attempt_ends_alone_in_one_write_only_while_its_lease_holds(runtime: Runtime) -> None:
    """`finish_attempt` (one statement that commits by itself on PostgreSQL): with a lease that is gone
    nothing of the attempt is written, not the rows held for it, its status or an event; with the
    live lease the task, its rows, the agent's status and the events, in order."""
    task = await stored_task(runtime)
    async with runtime.session() as session:
        lease = await AgentService(session=session).start_attempt(task.id, 30)
    assert lease is not None

    async def written() -> tuple[int, int, list[Event], AgentStatus | None]:
        async with runtime.session() as session:
            usage = await session.scalar(select(func.count()).select_from(LlmUsage))
            artifacts = await session.scalar(select(func.count()).select_from(Artifact))
            events = list(await session.scalars(select(Event).where(Event.task_id == task.id).order_by(Event.id)))
            status = await session.scalar(select(AgentStatus).where(AgentStatus.project_id == task.project_id))
            return usage or 0, artifacts or 0, events, status

    before = await written()
    assert await finish_alone(runtime, Lease(lease.task, "a lease that is gone")) is None
    usage, artifacts, events, status = await written()
    assert (usage, artifacts, len(events)) == (0, 0, len(before[2]))
    assert status is not None and (status.status, status.current_task_id) == ("working", task.id)

    finished = await finish_alone(runtime, lease)
    assert finished is not None and (finished.id, finished.status) == (task.id, "completed")
    assert finished.lease_token is None and finished.finished_at is not None
    usage, artifacts, events, status = await written()
    assert usage == 1 and artifacts >= 2  # the document and its section
    assert status is not None and (status.status, status.current_task_id) == ("idle", None)
    async with runtime.session() as session:
        stored = await session.get_one(AgentTask, task.id)
        assert (stored.status, stored.output) == ("completed", {"summary": "done"})
        idle = await session.scalar(
            select(Event)
            .where(Event.project_id == task.project_id, Event.event_type == "agent_status_changed")
            .order_by(Event.id.desc())
            .limit(1)
        )
    ended = [(event.event_type, event.data.get("status")) for event in events[len(before[2]) :]]
    assert ended == [("artifact_generated", None), ("task_progress_updated", "completed")]
    assert idle is not None and idle.id > events[-1].id and idle.task_id is None
    assert idle.data == {"agent_type": "coder", "status": "idle", "current_task_id": None}
    assert await finish_alone(runtime, lease) is None  # once


async def test_many_attempts_of_one_agent_end_at_once(runtime: Runtime) -> None:
    """Attempts of one agent in one project, ending together, each write the agent's one row: every
    task completes once with its rows, the agent ends idle, the events' ids follow their commits."""
    first = await stored_task(runtime)
    async with runtime.session() as session:
        service = TaskService(session=session)
        others = [
            await service.create_task(first.project_id, TaskCreate(agent_type=AgentType.CODER, instructions="x"))
            for _ in range(11)
        ]
        await session.commit()
    leases = []
    for task in [first, *others]:
        async with runtime.session() as session:
            lease = await AgentService(session=session).start_attempt(task.id, 30)
        assert lease is not None
        leases.append(lease)
    barrier = asyncio.Barrier(len(leases))

    async def end(lease: Lease) -> AgentTask | None:
        await barrier.wait()
        return await finish_alone(runtime, lease, title=f"notes of {lease.task.id}")

    finished = await asyncio.gather(*(end(lease) for lease in leases))
    assert all(task is not None and task.status == "completed" for task in finished)
    async with runtime.session() as session:
        statuses = list(await session.scalars(select(AgentStatus).where(AgentStatus.project_id == first.project_id)))
        usage = await session.scalar(select(func.count()).select_from(LlmUsage))
        completions = list(
            await session.scalars(
                select(Event).where(
                    Event.project_id == first.project_id,
                    Event.event_type == "task_progress_updated",
                    Event.data["status"].as_string() == "completed",
                )
            )
        )
    assert [(row.status, row.current_task_id) for row in statuses] == [("idle", None)]
    assert usage == len(leases)
    assert sorted(str(event.task_id) for event in completions) == sorted(str(lease.task.id) for lease in leases)

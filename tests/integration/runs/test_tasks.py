"""Tasks on both modes: api -> broker -> worker -> database -> events, and bad input."""

from __future__ import annotations

import asyncio
import functools
import uuid

from httpx import AsyncClient
from sqlalchemy import select

from app.config import Settings
from app.db.engine import build_db_config
from app.events.models import Event
from app.events.services import EventService
from app.projects.models import Project
from tests import factories
from tests.helpers import wait_for_task

new_project = functools.partial(factories.new_project, name="tasks")


async def events_of(settings: Settings, project_id: str) -> list[Event]:
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            statement = select(Event).where(Event.project_id == uuid.UUID(project_id)).order_by(Event.id)
            return list(await session.scalars(statement))
    finally:
        await config.get_engine().dispose()


async def test_submitted_task_runs_to_completion_with_events(client: AsyncClient, settings: Settings) -> None:
    project_id = await new_project(client)
    response = await client.post(
        f"/api/v1/projects/{project_id}/tasks",
        json={"agent_type": "analyst", "instructions": "Write the PRD for a todo app"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "submitted"
    assert body["job_id"]
    task = await wait_for_task(client, body["task_id"], "completed")
    assert task["attempts"] == 1
    assert task["output"]["summary"].startswith("analyst finished")
    assert task["queued_at"] <= task["started_at"] <= task["finished_at"]

    events = await events_of(settings, project_id)
    task_events = [e for e in events if e.task_id == uuid.UUID(body["task_id"])]
    assert [e.event_type for e in task_events][0] == "task_created"
    transitions = [e for e in task_events if e.event_type == "task_progress_updated"]
    statuses = [e.data["status"] for e in transitions]
    assert statuses[0] == "queued"
    assert statuses[-1] == "completed"
    assert statuses.count("completed") == 1
    assert "working" in statuses
    progress: list[int] = [e.data["progress_percentage"] for e in transitions if "progress_percentage" in e.data]
    assert progress == sorted(progress)  # monotonically increasing
    assert progress[-1] == 100
    assert [e.id for e in events] == sorted(e.id for e in events)
    # The analyst wrote its documents, and its status went working -> idle around the work.
    generated = [e.data for e in task_events if e.event_type == "artifact_generated"]
    assert sorted(item["artifact_type"] for item in generated) == ["project_plan", "software_specification"]
    assert [item["artifact_id"] for item in generated] == task["output"]["artifact_ids"]
    agent_states = [e.data["status"] for e in events if e.event_type == "agent_status_changed"]
    assert agent_states == ["working", "idle"]


async def test_task_input_is_validated(client: AsyncClient) -> None:
    project_id = await new_project(client)
    path = f"/api/v1/projects/{project_id}/tasks"
    for body, field in [
        ({"agent_type": "poet", "instructions": "x"}, "agent_type"),
        ({"agent_type": "coder"}, "instructions"),
        ({"agent_type": "coder", "instructions": ""}, "instructions"),
        ({"agent_type": "coder", "instructions": "x", "context_ids": ["not-a-uuid"]}, "context_ids"),
        ({"agent_type": "coder", "instructions": "x", "priority": 1}, "priority"),
        ({"agent_type": "coder", "instructions": ["x"]}, "instructions"),
    ]:
        response = await client.post(path, json=body)
        assert response.status_code == 400, (body, response.text)
        assert field in response.text
    unknown = str(uuid.uuid4())
    response = await client.post(path, json={"agent_type": "coder", "instructions": "x", "context_ids": [unknown]})
    assert response.status_code == 422
    assert unknown in response.text
    # Nothing was stored by any of the refused requests.
    assert (await client.get(f"/api/v1/projects/{project_id}/status")).json()["tasks"] == []


async def test_a_submission_stores_the_task_queued_with_its_two_events_and_nothing_for_an_unknown_project(
    client: AsyncClient, settings: Settings
) -> None:
    """PostgreSQL writes a submission in one statement, SQLite in the ORM's steps: the same row and events."""
    project_id = await new_project(client)
    response = await client.post(
        f"/api/v1/projects/{project_id}/tasks",
        json={"agent_type": "coder", "instructions": "Build it", "timeout_seconds": 120},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    task = (await client.get(f"/api/v1/tasks/{body['task_id']}")).json()
    assert (task["job_id"], task["timeout_seconds"], task["context_ids"]) == (body["job_id"], 120, [])
    assert task["queued_at"] is not None and task["created_at"] <= task["queued_at"]
    created, queued = [e for e in await events_of(settings, project_id) if e.task_id == uuid.UUID(body["task_id"])][:2]
    assert created.id < queued.id
    assert (created.event_type, created.data) == (
        "task_created",
        {"task_id": body["task_id"], "agent_type": "coder", "status": "pending"},
    )
    assert created.actor  # the token's name
    assert (queued.event_type, queued.actor, queued.data) == (
        "task_progress_updated",
        None,
        {
            "task_id": body["task_id"],
            "agent_type": "coder",
            "status": "queued",
            "message": "queued",
            "progress_percentage": 0,
        },
    )

    unknown = str(uuid.uuid4())
    response = await client.post(f"/api/v1/projects/{unknown}/tasks", json={"agent_type": "coder", "instructions": "x"})
    assert response.status_code == 404, response.text
    assert await events_of(settings, unknown) == []


async def test_a_submission_waits_for_a_transaction_holding_its_project_and_both_commit(
    client: AsyncClient, settings: Settings
) -> None:
    """A transaction that holds the project FOR UPDATE and writes an event at its commit (an emergency
    stop, a project update) must not deadlock with a submission that holds the event-order lock."""
    project_id = await new_project(client)
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            await session.scalar(select(Project).where(Project.id == uuid.UUID(project_id)).with_for_update())
            submission = asyncio.create_task(
                client.post(f"/api/v1/projects/{project_id}/tasks", json={"agent_type": "coder", "instructions": "x"})
            )
            await asyncio.sleep(0.5)  # the submission is under way, waiting for this transaction
            data = {"project_id": project_id, "changes": ["description"], "status": "active"}
            await EventService(session=session).record("project_updated", project_id=uuid.UUID(project_id), data=data)
            await session.commit()
        response = await asyncio.wait_for(submission, 20)
    finally:
        await config.get_engine().dispose()
    assert response.status_code == 201, response.text
    types = [e.event_type for e in await events_of(settings, project_id)]
    assert types.index("project_updated") < types.index("task_created") < types.index("task_progress_updated")


async def test_unknown_task_is_404(client: AsyncClient) -> None:
    response = await client.get(f"/api/v1/tasks/{uuid.uuid4()}")
    assert response.status_code == 404
    assert (await client.get("/api/v1/tasks/not-a-uuid")).status_code in {400, 404}

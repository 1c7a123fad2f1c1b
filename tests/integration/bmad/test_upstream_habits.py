"""What upstream BotArmy / BMAD clients send and expect: every agent in the status listing, the
oversight level as `{"level": ...}`, optional steps as numbers."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient

from app.config import load_settings
from app.tasks.models import AgentType
from tests import factories
from tests.conftest import FAST_ENV
from tests.helpers import app_client, wait_for_task

ALL_AGENTS = sorted(agent.value for agent in AgentType)

OPTIONAL_WORKFLOW = """workflow:
  id: with-optional
  name: With an optional step
  sequence:
    - agent: analyst
      creates: prd.md
    - agent: architect
      optional: true
      creates: architecture.md
      requires: prd.md
"""


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncClient]:
    bmad = tmp_path / "bmad"
    (bmad / "workflows").mkdir(parents=True)
    (bmad / "workflows" / "with-optional.yaml").write_text(OPTIONAL_WORKFLOW, encoding="utf-8")
    settings = load_settings({**FAST_ENV, "BOTARMY_DATA_DIR": str(tmp_path / "data"), "BOTARMY_BMAD_DIR": str(bmad)})
    async with app_client(settings) as test_client:
        yield test_client


new_project = functools.partial(factories.new_project, name="upstream")


async def test_the_status_listing_has_every_agent_idle_when_it_has_no_work(client: AsyncClient) -> None:
    everywhere = (await client.get("/api/v1/agents/status")).json()["items"]
    assert [(row["agent_type"], row["status"], row["project_id"]) for row in everywhere] == [
        (agent, "idle", None) for agent in ALL_AGENTS
    ]
    project_id = await new_project(client)
    fresh = (await client.get("/api/v1/agents/status", params={"project_id": project_id})).json()["items"]
    assert [(row["agent_type"], row["status"], row["project_id"]) for row in fresh] == [
        (agent, "idle", project_id) for agent in ALL_AGENTS
    ]
    submitted = await client.post(
        f"/api/v1/projects/{project_id}/tasks",
        json={"agent_type": "coder", "instructions": "Ask first [[offline:question=Which cloud?]]"},
    )
    assert submitted.status_code == 201, submitted.text
    task_id = submitted.json()["task_id"]
    await wait_for_task(client, task_id, "waiting_for_hitl")
    busy = (await client.get("/api/v1/agents/status", params={"project_id": project_id})).json()["items"]
    assert [row["agent_type"] for row in busy] == ALL_AGENTS
    assert {row["agent_type"]: (row["status"], row["current_task_id"]) for row in busy}["coder"] == (
        "waiting_for_hitl",
        task_id,
    )
    assert {row["status"] for row in busy if row["agent_type"] != "coder"} == {"idle"}
    # Without ?project_id=: the coder's row in its project, and every other agent, idle.
    everywhere = (await client.get("/api/v1/agents/status")).json()["items"]
    assert sorted(row["agent_type"] for row in everywhere) == ALL_AGENTS
    assert [row for row in everywhere if row["agent_type"] == "coder"][0]["project_id"] == project_id
    unknown = await client.get("/api/v1/agents/status", params={"project_id": str(uuid.uuid4())})
    assert unknown.status_code == 404


async def test_the_oversight_level_takes_the_upstream_body(client: AsyncClient) -> None:
    project_id = await new_project(client)
    url = f"/api/v1/hitl/project/{project_id}/oversight-level"
    upstream = await client.post(url, json={"level": "high"})
    assert upstream.status_code == 200, upstream.text
    assert upstream.json() == {"project_id": project_id, "oversight_level": "high"}
    ours = await client.post(url, json={"oversight_level": "low"})
    assert ours.json()["oversight_level"] == "low"
    assert (await client.get(url)).json()["oversight_level"] == "low"
    both = await client.post(url, json={"oversight_level": "medium", "level": "high"})
    assert both.json()["oversight_level"] == "medium"  # ours wins
    for body, reason in [
        ({}, "give oversight_level (or level)"),
        ({"level": None}, "level"),
        ({"level": "extreme"}, "level"),
        ({"levels": "high"}, "levels"),
    ]:
        bad = await client.post(url, json=body)
        assert bad.status_code == 400, (body, bad.text)
        assert reason in bad.text


async def start(client: AsyncClient, project_id: str, include_optional: list[Any]) -> dict[str, Any]:
    body: dict[str, Any] = (
        await client.post(
            "/api/v1/executions",
            json={
                "project_id": project_id,
                "workflow_id": "with-optional",
                "inputs": {"idea": "A todo list for teams", "include_optional": include_optional},
            },
        )
    ).json()
    return body


async def wait_done(client: AsyncClient, execution_id: str) -> dict[str, Any]:
    for _ in range(300):
        body: dict[str, Any] = (await client.get(f"/api/v1/executions/{execution_id}")).json()
        if body["status"] in {"completed", "failed"}:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(body)


@pytest.mark.parametrize("include_optional", [[1], ["1"]])
async def test_optional_steps_are_named_by_number_or_text(client: AsyncClient, include_optional: list[Any]) -> None:
    project_id = await new_project(client)
    started = await start(client, project_id, include_optional)
    done = await wait_done(client, started["id"])
    assert done["status"] == "completed", done
    assert [step["status"] for step in done["steps"]] == ["completed", "completed"]


async def test_an_optional_step_not_named_is_skipped_and_bad_indexes_are_refused(client: AsyncClient) -> None:
    project_id = await new_project(client)
    done = await wait_done(client, (await start(client, project_id, []))["id"])
    assert [step["status"] for step in done["steps"]] == ["completed", "skipped"]
    for bad in ([-1], ["x"], [1.5], [True]):
        response = await client.post(
            "/api/v1/executions",
            json={
                "project_id": project_id,
                "workflow_id": "with-optional",
                "inputs": {"idea": "x", "include_optional": bad},
            },
        )
        assert response.status_code == 400, (bad, response.text)

"""Workflow executions on both modes: whole runs, gates, skips, pause/resume/cancel, bad input."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.config import Settings, load_settings
from app.db.engine import build_db_config
from app.events.models import Event
from app.tasks.models import AgentTask
from app.workflows.models import Handoff
from tests import factories
from tests.conftest import shared_path
from tests.helpers import app_client, eventually

SIX = ["analyst", "orchestrator", "architect", "coder", "tester", "deployer"]


async def new_project(client: AsyncClient, oversight: str = "low") -> str:
    return await factories.new_project(client, name="Recipe Box", oversight_level=oversight)


async def start(
    client: AsyncClient, project_id: str, workflow_id: str = "botarmy-sdlc", **inputs: Any
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/executions",
        json={
            "project_id": project_id,
            "workflow_id": workflow_id,
            "inputs": {"idea": "A recipe box for families", **inputs},
        },
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_execution(
    client: AsyncClient, execution_id: str, status: str, timeout: float = 60
) -> dict[str, Any]:
    response = await eventually(
        lambda: client.get(f"/api/v1/executions/{execution_id}"),
        lambda r: r.json()["status"] == status,
        timeout=timeout,
        interval=0.1,
    )
    body: dict[str, Any] = response.json()
    return body


async def rows(settings: Settings, statement: Any) -> list[Any]:
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            return list(await session.scalars(statement))
    finally:
        await config.get_engine().dispose()


async def test_the_default_workflow_runs_to_completion(client: AsyncClient, settings: Settings) -> None:
    project_id = await new_project(client)
    started = await start(client, project_id)
    assert started["status"] == "running"
    done = await wait_for_execution(client, started["id"], "completed")
    assert [step["agent_type"] for step in done["steps"]] == SIX
    assert all(step["status"] == "completed" and step["task_status"] == "completed" for step in done["steps"])
    assert all(step["artifact_ids"] for step in done["steps"])

    # The coder step repeats for each task of the architect's implementation plan, one run each.
    design = [(await client.get(f"/api/v1/artifacts/{id_}")).json() for id_ in done["steps"][2]["artifact_ids"]]
    plan_tasks = next(a["content"]["tasks"] for a in design if a["artifact_type"] == "implementation_plan")
    coder_runs = done["steps"][3]["runs"]
    assert len(plan_tasks) > 1
    assert [run["item"] for run in coder_runs] == [f"{task['id']}: {task['title']}" for task in plan_tasks]
    assert all(run["task_status"] == "completed" and run["artifact_ids"] for run in coder_runs)
    assert [len(step["runs"]) for step in done["steps"]] == [1, 1, 1, len(plan_tasks), 1, 1]

    tasks = await rows(
        settings, select(AgentTask).where(AgentTask.project_id == uuid.UUID(project_id)).order_by(AgentTask.id)
    )
    expected = [*SIX[:3], *["coder"] * len(plan_tasks), *SIX[4:]]
    assert [task.agent_type for task in tasks] == expected  # each step (or run) exactly once, in order
    assert [task.step_id for task in tasks] == [str(SIX.index(agent)) for agent in expected]
    assert [task.at_most_once for task in tasks] == [agent == "deployer" for agent in expected]
    by_agent = {task.agent_type: task for task in tasks}
    # The architect was given the PRD (and the idea), each coder run the plan and architecture, and
    # the tester the code of every coder run.
    architect_context = set(by_agent["architect"].context_ids)
    assert set(done["steps"][0]["artifact_ids"]) & architect_context
    for coder in (task for task in tasks if task.agent_type == "coder"):
        assert set(done["steps"][2]["artifact_ids"]) <= set(coder.context_ids)
    coder_code = {artifact_id for run in coder_runs for artifact_id in run["artifact_ids"]}
    assert coder_code <= set(by_agent["tester"].context_ids)
    handoffs = await rows(
        settings, select(Handoff).where(Handoff.project_id == uuid.UUID(project_id)).order_by(Handoff.id)
    )
    assert [(h.from_agent, h.to_agent) for h in handoffs] == list(zip(["orchestrator", *SIX[:-1]], SIX, strict=True))
    assert handoffs[2].phase == "design"
    assert handoffs[2].expected_outputs == ["system_architecture", "implementation_plan"]

    project = (await client.get(f"/api/v1/projects/{project_id}")).json()
    assert project["status"] == "completed"
    completion = (await client.get(f"/api/v1/projects/{project_id}/completion")).json()
    assert (completion["steps_done"], completion["steps_total"], completion["percentage"]) == (6, 6, 100.0)
    documents = (await client.get(f"/api/v1/projects/{project_id}/documents")).json()["documents"]
    assert len(documents) == 5
    events = await rows(
        settings, select(Event.event_type).where(Event.project_id == uuid.UUID(project_id)).order_by(Event.id)
    )
    assert events.count("workflow_step_started") == 6
    milestones = [kind for kind in events if kind.startswith(("workflow_", "project_completed"))]
    assert milestones[-2:] == ["workflow_completed", "project_completed"]
    executions = (await client.get(f"/api/v1/projects/{project_id}/executions")).json()["items"]
    assert [e["id"] for e in executions] == [started["id"]]


async def test_phase_gates_by_oversight_and_approval(client: AsyncClient) -> None:
    project_id = await new_project(client, "medium")
    started = await start(client, project_id)
    waiting = await wait_for_execution(client, started["id"], "waiting_for_hitl")
    # Medium oversight: discovery and plan pass, the design phase ends at a gate.
    assert [step["status"] for step in waiting["steps"]] == ["completed"] * 3 + ["pending"] * 3
    gate = waiting["gates"]["design"]
    assert gate["status"] == "pending"
    answered = await client.post(
        f"/api/v1/hitl/{gate['request_id']}/respond", json={"action": "approve", "comment": "ok"}
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "approved"
    again = await client.post(f"/api/v1/hitl/{gate['request_id']}/respond", json={"action": "approve"})
    assert again.status_code == 409
    second = await wait_for_execution(client, started["id"], "waiting_for_hitl")
    assert second["gates"]["build"]["status"] == "pending"
    assert [step["status"] for step in second["steps"]][3] == "completed"
    await client.post(f"/api/v1/hitl/{second['gates']['build']['request_id']}/respond", json={"action": "approve"})
    done = await wait_for_execution(client, started["id"], "completed")
    assert sorted(done["gates"]) == ["build", "design"]


@pytest.fixture
async def sample_client(mode_env: dict[str, str]) -> AsyncIterator[AsyncClient]:
    """The app with the sample BMAD files loaded beside ours."""
    settings = load_settings({**mode_env, "BOTARMY_BMAD_DIR": str(shared_path("bmad-samples"))})
    async with app_client(settings, timeout=30) as client:
        yield client


async def test_the_sample_bmad_workflow_runs_and_skips_what_it_cannot_or_need_not_run(
    sample_client: AsyncClient,
) -> None:
    project_id = await new_project(sample_client)
    started = await start(sample_client, project_id, "greenfield-service")
    done = await wait_for_execution(sample_client, started["id"], "completed")
    ran = [(step["agent"], step["phase"]) for step in done["steps"] if step["status"] == "completed"]
    assert ran == [
        ("analyst", "discovery"),
        ("pm", "plan"),
        ("architect", "design"),
        ("po", "plan"),
        ("po", "plan"),
        ("sm", "plan"),
        ("dev", "build"),
    ]
    reasons = {step["index"]: step["reason"] for step in done["steps"] if step["status"] == "skipped"}
    assert "architecture_suggests_prd_changes" in reasons[3]  # a condition no agent has set
    assert "various" in reasons[5]  # no agent of ours
    assert reasons[10] == "optional step not requested"  # qa review is optional
    # The PO's sharding writes epics under the PRD; the story step `repeats: for_each_epic`: one run each.
    epics = done["steps"][6]["artifact_ids"]
    assert len(epics) >= 2
    story = done["steps"][7]
    assert (story["agent"], story["reason"]) == ("sm", None)
    assert len(story["runs"]) == len(epics)
    assert all(step["status"] in ("completed", "skipped") for step in done["steps"])


async def test_pause_resume_and_cancel(client: AsyncClient) -> None:
    project_id = await new_project(client)
    # Each step's model call takes a second, so that the pause arrives while the first one runs.
    response = await client.post(
        "/api/v1/executions",
        json={"project_id": project_id, "workflow_id": "botarmy-sdlc", "inputs": {"idea": "Slow [[offline:delay=1]]"}},
    )
    started = response.json()
    paused = await client.post(f"/api/v1/executions/{started['id']}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    assert (await client.post(f"/api/v1/executions/{started['id']}/pause")).status_code == 409
    # The step that was running finishes; nothing new starts while paused.
    await eventually(
        lambda: client.get(f"/api/v1/executions/{started['id']}"),
        lambda r: r.json()["steps"][0]["status"] == "completed",
        timeout=30,
    )
    still = (await client.get(f"/api/v1/executions/{started['id']}")).json()
    assert still["status"] == "paused"
    assert still["steps"][1]["status"] == "pending"
    resumed = await client.post(f"/api/v1/executions/{started['id']}/resume")
    assert resumed.json()["status"] == "running"
    cancelled = await client.post(f"/api/v1/executions/{started['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert (await client.post(f"/api/v1/executions/{started['id']}/cancel")).status_code == 409
    assert (await client.post(f"/api/v1/executions/{started['id']}/resume")).status_code == 409


async def test_bad_starts_are_refused(client: AsyncClient) -> None:
    project_id = await new_project(client)
    for body, status, text in [
        ({"project_id": project_id, "workflow_id": "nope", "inputs": {"idea": "x"}}, 404, "botarmy-sdlc"),
        ({"project_id": str(uuid.uuid4()), "workflow_id": "botarmy-sdlc", "inputs": {"idea": "x"}}, 404, "Project"),
        ({"project_id": project_id, "workflow_id": "botarmy-sdlc", "inputs": {}}, 400, "idea"),
        ({"project_id": project_id, "workflow_id": "../etc", "inputs": {"idea": "x"}}, 400, "workflow_id"),
    ]:
        response = await client.post("/api/v1/executions", json=body)
        assert response.status_code == status, (body, response.text)
        assert text in response.text
    assert (await client.get(f"/api/v1/executions/{uuid.uuid4()}")).status_code == 404


async def test_the_product_owner_steers_a_whole_run_through_the_api(client: AsyncClient) -> None:
    """High oversight: every phase ends at a gate; the owner rejects one, amends one, approves the rest."""
    project_id = await new_project(client, "high")
    started = await start(client, project_id)
    seen: list[str] = []
    amended_overview = "Amended by the owner: one PostgreSQL database, no message broker."
    for _ in range(10):
        response = await eventually(
            lambda: client.get(f"/api/v1/executions/{started['id']}"),
            lambda r: r.json()["status"] in ("waiting_for_hitl", "completed", "failed"),
            timeout=60,
            interval=0.1,
        )
        body = response.json()
        if body["status"] != "waiting_for_hitl":
            break
        phase, gate = next((p, g) for p, g in body["gates"].items() if g["status"] == "pending")
        seen.append(phase)
        request_id = gate["request_id"]
        answer: dict[str, Any]
        if phase == "discovery" and seen.count("discovery") == 1:
            answer = {"action": "reject", "comment": "Focus on grandparents sharing recipes"}
        elif phase == "design":
            about = (await client.get(f"/api/v1/hitl/{request_id}/context")).json()["artifacts"]
            architecture = next(a for a in about if a["artifact_type"] == "system_architecture")
            answer = {
                "action": "amend",
                "comment": "Keep the stack small",
                "amended_content": {**architecture["content"], "overview": amended_overview},
                "response": {"artifact_id": architecture["id"]},
            }
        else:
            answer = {"action": "approve", "comment": "looks right"}
        answered = await client.post(f"/api/v1/hitl/{request_id}/respond", json=answer)
        assert answered.status_code == 200, answered.text
    assert body["status"] == "completed", body
    # Discovery was asked twice (rejected, then approved after the redo); launch is the last phase.
    assert seen == ["discovery", "discovery", "plan", "design", "build", "validate"]
    analyst = body["steps"][0]
    assert len(analyst["runs"]) == 1 and analyst["task_status"] == "completed"
    redo = (await client.get(f"/api/v1/tasks/{analyst['task_id']}")).json()
    assert redo["feedback"] == "Focus on grandparents sharing recipes"
    specification = (await client.get(f"/api/v1/artifacts/{analyst['artifact_ids'][0]}")).json()
    assert "revised: Focus on grandparents sharing recipes" in specification["title"]
    documents = {
        d["stage"]: d for d in (await client.get(f"/api/v1/projects/{project_id}/documents")).json()["documents"]
    }
    assert amended_overview in documents["architecture"]["markdown"]
    assert "revised: Focus on grandparents" in documents["prd"]["markdown"]

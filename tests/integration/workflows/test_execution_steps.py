"""Step semantics on both modes: parallel steps within a phase, conditions, optional steps, repeats.

Each test runs workflows of its own, written as BMAD files into a directory the app loads beside ours.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.config import Settings, load_settings
from app.events.models import Event
from app.tasks.models import AgentTask
from tests.helpers import app_client
from tests.integration.workflows.test_executions import new_project, rows, start, wait_for_execution

WORKFLOWS = {
    # Design: the architect and the tester both need only the PRD, so they run side by side; the
    # coder needs the architecture, so it waits for the architect (not for the tester).
    "side-by-side": """
workflow:
  id: side-by-side
  name: Side by side
  sequence:
    - agent: analyst
      phase: discovery
      creates: software_specification
    - agent: architect
      phase: design
      creates: system_architecture
      requires: software_specification
    - agent: tester
      phase: design
      creates: test_results
      requires: software_specification
    - agent: coder
      phase: design
      creates: source_code
      requires: system_architecture
""",
    # One phase: a coder, then a tester only if `needs_tests`, then an optional deployer.
    "conditional": """
workflow:
  id: conditional
  name: Conditional
  sequence:
    - agent: coder
      phase: build
      creates: source_code
    - agent: tester
      phase: build
      creates: test_results
      requires: source_code
      condition: needs_tests
    - agent: deployer
      phase: build
      creates: deployment_log
      optional: true
""",
    # Medium oversight gates design and build: the design phase's one step is skipped (its condition
    # is not set), so there is nothing to approve after it; after build there is.
    "skipped-phase": """
workflow:
  id: skipped-phase
  name: Skipped phase
  sequence:
    - agent: analyst
      phase: plan
      creates: software_specification
    - agent: architect
      phase: design
      creates: system_architecture
      condition: needs_design
    - agent: coder
      phase: build
      creates: source_code
    - agent: tester
      phase: validate
      creates: test_results
""",
    # A coder that requires an architecture (no earlier step makes one: the project's newest),
    # a PRD (there is none) and a name we have no type for.
    "reads-inputs": """
workflow:
  id: reads-inputs
  name: Reads inputs
  sequence:
    - agent: coder
      phase: build
      creates: source_code
      requires:
        - architecture.md
        - prd.md
        - mockups.fig
""",
}


@pytest.fixture
def settings(mode_env: dict[str, str], tmp_path: Path) -> Settings:
    bmad = tmp_path / "bmad"
    (bmad / "workflows").mkdir(parents=True)
    for name, text in WORKFLOWS.items():
        (bmad / "workflows" / f"{name}.yaml").write_text(text)
    return load_settings({**mode_env, "BOTARMY_BMAD_DIR": str(bmad)})


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncClient]:
    async with app_client(settings, timeout=30) as test_client:
        yield test_client


async def events_of(settings: Settings, project_id: str) -> list[Event]:
    statement = select(Event).where(Event.project_id == uuid.UUID(project_id)).order_by(Event.id)
    return await rows(settings, statement)


def step_event(events: list[Event], kind: str, step: int) -> int:
    """The position of the step's first event of `kind` in the log."""
    return next(n for n, e in enumerate(events) if e.event_type == kind and e.data.get("step") == step)


async def test_steps_of_a_phase_run_side_by_side_when_their_inputs_are_ready(
    client: AsyncClient, settings: Settings
) -> None:
    project_id = await new_project(client)
    started = await start(client, project_id, "side-by-side", idea="A recipe box [[offline:delay=1]]")
    done = await wait_for_execution(client, started["id"], "completed")
    assert [step["status"] for step in done["steps"]] == ["completed"] * 4

    events = await events_of(settings, project_id)
    architect_started, tester_started = (
        step_event(events, "workflow_step_started", 1),
        step_event(events, "workflow_step_started", 2),
    )
    architect_done = step_event(events, "workflow_step_completed", 1)
    tester_done = step_event(events, "workflow_step_completed", 2)
    # Both design steps started before either finished, in one transaction (adjacent events).
    assert max(architect_started, tester_started) < min(architect_done, tester_done)
    # The coder started only once the architecture it needs was there.
    assert step_event(events, "workflow_step_started", 3) > architect_done

    tasks = {
        task.agent_type: task
        for task in await rows(settings, select(AgentTask).where(AgentTask.project_id == uuid.UUID(project_id)))
    }
    architect, tester = tasks["architect"], tasks["tester"]
    assert architect.started_at is not None and tester.started_at is not None
    assert architect.finished_at is not None and tester.finished_at is not None
    # Their model calls (a second each) overlapped in time: they really ran at once.
    assert architect.started_at < tester.finished_at and tester.started_at < architect.finished_at
    assert set(done["steps"][1]["artifact_ids"]) & set(tasks["coder"].context_ids)


@pytest.mark.parametrize(
    ("oversight", "directive", "answer", "flag", "tester", "reason"),
    [
        ("low", "", None, None, "skipped", "condition 'needs_tests' is not set"),
        ("low", "[[offline:flags=needs_tests]]", None, True, "completed", None),
        ("low", "[[offline:flags=!needs_tests]]", None, False, "skipped", "condition 'needs_tests' is false"),
        ("high", "", "approve", True, "completed", None),
        ("high", "", "reject", False, "skipped", "condition 'needs_tests' is false"),
    ],
    ids=["unset-low", "set-by-agent", "cleared-by-agent", "asked-approved", "asked-rejected"],
)
async def test_conditions_from_agents_or_asked_of_the_human(
    client: AsyncClient,
    oversight: str,
    directive: str,
    answer: str | None,
    flag: bool | None,
    tester: str,
    reason: str | None,
) -> None:
    project_id = await new_project(client, oversight)
    started = await start(client, project_id, "conditional", idea=f"A ledger {directive}")
    if answer is not None:
        # High oversight: no agent said whether tests are needed, so the product owner is asked.
        waiting = await wait_for_execution(client, started["id"], "waiting_for_hitl")
        step = waiting["steps"][1]
        assert (step["status"], step["reason"]) == ("waiting_for_hitl", "condition 'needs_tests' asked")
        assert waiting["steps"][0]["status"] == "completed"
        response = await client.post(
            f"/api/v1/hitl/{step['request_id']}/respond", json={"action": answer, "comment": "decided by the owner"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == {"approve": "approved", "reject": "rejected"}[answer]
        again = await client.post(f"/api/v1/hitl/{step['request_id']}/respond", json={"action": "approve"})
        assert again.status_code == 409
    done = await wait_for_execution(client, started["id"], "completed")
    assert done["steps"][1]["status"] == tester
    assert done["steps"][1]["reason"] == reason
    assert done["variables"].get("needs_tests") is flag
    # The optional deployer runs only under high oversight (or when asked for).
    assert done["steps"][2]["status"] == ("completed" if oversight == "high" else "skipped")


async def test_an_optional_step_runs_when_requested(client: AsyncClient) -> None:
    project_id = await new_project(client)
    started = await start(client, project_id, "conditional", include_optional=["2"])
    done = await wait_for_execution(client, started["id"], "completed")
    assert [step["status"] for step in done["steps"]] == ["completed", "skipped", "completed"]


async def test_a_bad_answer_to_a_gate_is_refused_and_changes_nothing(client: AsyncClient) -> None:
    project_id = await new_project(client, "high")
    started = await start(client, project_id, "side-by-side")
    waiting = await wait_for_execution(client, started["id"], "waiting_for_hitl")
    gate: dict[str, Any] = waiting["gates"]["discovery"]
    for body, status, field in (
        ({"action": "reject"}, 422, "comment"),
        ({"action": "amend", "comment": "shorter"}, 422, "amended_content"),
        ({"action": "maybe"}, 400, "action"),
        ({"action": "amend", "comment": "x", "amended_content": {"not": "a spec"}}, 422, "content"),
    ):
        response = await client.post(f"/api/v1/hitl/{gate['request_id']}/respond", json=body)
        assert response.status_code == status, response.text
        assert field in response.text
    assert (await client.get(f"/api/v1/executions/{started['id']}")).json()["gates"]["discovery"] == gate
    request = (await client.get(f"/api/v1/hitl/{gate['request_id']}")).json()
    assert (request["status"], [entry["action"] for entry in request["history"]]) == ("pending", ["created"])


async def test_no_gate_after_a_phase_whose_every_step_was_skipped(client: AsyncClient) -> None:
    project_id = await new_project(client, "medium")
    started = await start(client, project_id, "skipped-phase")
    waiting = await wait_for_execution(client, started["id"], "waiting_for_hitl")
    assert [step["status"] for step in waiting["steps"]] == ["completed", "skipped", "completed", "pending"]
    assert list(waiting["gates"]) == ["build"]
    answer = await client.post(
        f"/api/v1/hitl/{waiting['gates']['build']['request_id']}/respond", json={"action": "approve"}
    )
    assert answer.status_code == 200, answer.text
    done = await wait_for_execution(client, started["id"], "completed")
    assert list(done["gates"]) == ["build"]


ARCHITECTURE = {
    "overview": "A recipe box.",
    "components": [{"name": "recipes", "responsibility": "Recipes and their steps", "technology": "Python"}],
    "api_spec": [],
    "data_model": [],
    "risks": [],
}


async def test_a_step_reads_the_projects_newest_artifact_and_says_which_inputs_are_missing(
    client: AsyncClient, settings: Settings
) -> None:
    """No earlier step makes the architecture the coder requires: it reads the project's newest
    one. Nothing anywhere is a PRD, and `mockups.fig` is no type of ours: the step says so, on the
    execution and in its `workflow_step_started` event, and runs with what there is."""
    project_id = await new_project(client)
    for title in ("Architecture v1", "Architecture v2"):
        response = await client.post(
            f"/api/v1/projects/{project_id}/artifacts",
            json={"artifact_type": "system_architecture", "title": title, "content": ARCHITECTURE},
        )
        assert response.status_code == 201, response.text
    newest = response.json()["id"]
    started = await start(client, project_id, "reads-inputs")
    done = await wait_for_execution(client, started["id"], "completed")
    step = done["steps"][0]
    missing = [
        "prd.md: no software_specification in the project yet",
        "mockups.fig: no artifact type of ours stands for it",
    ]
    assert step["missing_inputs"] == missing
    task = (await client.get(f"/api/v1/tasks/{step['task_id']}")).json()
    types = {(await client.get(f"/api/v1/artifacts/{a}")).json()["artifact_type"]: a for a in task["context_ids"]}
    assert types == {"system_architecture": newest, "user_input": types["user_input"]}
    [event] = [e for e in await events_of(settings, project_id) if e.event_type == "workflow_step_started"]
    assert event.data["missing_inputs"] == missing

"""Agents on the offline provider, both modes: artifacts, usage, status, budgets, retries, cancel, timeout."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import websockets
from httpx import AsyncClient
from sqlalchemy import func, select

from app.agents.models import LlmUsage
from app.agents.personas import AGENT_ARTIFACTS, BUILT_IN, PersonaFileError, load_bmad_agent, parse_bmad_agent
from app.agents.prompts import ContextItem, build_prompt
from app.artifacts.content import CONTENT_TYPES
from app.artifacts.models import Artifact, ArtifactType
from app.config import Settings, load_settings
from app.db.engine import build_db_config
from app.hitl.models import HitlRequest
from app.tasks.models import AgentType
from tests import factories
from tests.conftest import free_port, shared_path
from tests.helpers import Server, app_client, eventually, start_server, start_worker, task_status, wait_for_task

new_project = functools.partial(factories.new_project, name="agents")


async def submit(client: AsyncClient, project_id: str, agent_type: str, instructions: str, **extra: Any) -> str:
    response = await client.post(
        f"/api/v1/projects/{project_id}/tasks",
        json={"agent_type": agent_type, "instructions": instructions, **extra},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["task_id"])


async def rows(settings: Settings, statement: Any) -> list[Any]:
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            return list(await session.scalars(statement))
    finally:
        await config.get_engine().dispose()


# -- every agent, end to end ------------------------------------------------------------------


@pytest.fixture
def server(mode_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    served = start_server(mode_env, free_port(), tmp_path / "api.log")
    try:
        yield served
    finally:
        served.stop()


async def test_every_agent_type_writes_schema_valid_artifacts_seen_live(server: Server, settings: Settings) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as client:
        project_id = await new_project(client)
        async with websockets.connect(server.ws_url(f"/ws/projects/{project_id}")) as stream:
            task_ids = {
                agent: await submit(client, project_id, agent.value, f"{agent.value}: a recipe sharing site")
                for agent in AgentType
            }
            generated: list[dict[str, Any]] = []
            statuses: list[dict[str, Any]] = []
            finished: set[str] = set()
            async with asyncio.timeout(60):
                while finished != set(task_ids.values()):
                    event = json.loads(await stream.recv())
                    if event["event_type"] == "artifact_generated":
                        generated.append(event["data"])
                    elif event["event_type"] == "agent_status_changed":
                        statuses.append(event["data"])
                    elif event["event_type"] == "task_progress_updated" and event["data"]["status"] == "completed":
                        finished.add(event["data"]["task_id"])
        for agent, task_id in task_ids.items():
            task = await task_status(client, task_id)
            assert task["status"] == "completed", task
            expected = sorted(kind.value for kind in AGENT_ARTIFACTS[agent])
            mine = [item for item in generated if item["task_id"] == task_id]
            assert sorted(item["artifact_type"] for item in mine) == expected
            assert {item["source_agent"] for item in mine} == {agent.value}
            assert all(item["title"] for item in mine)
            assert task["output"]["artifact_ids"] == [item["artifact_id"] for item in mine]
        assert {item["agent_type"] for item in statuses if item["status"] == "working"} == {a.value for a in AgentType}

        agents = (await client.get("/api/v1/agents/status", params={"project_id": project_id})).json()["items"]
        assert {(row["agent_type"], row["status"]) for row in agents} == {(a.value, "idle") for a in AgentType}

        usage = (await client.get(f"/api/v1/projects/{project_id}/usage")).json()
        assert usage["total"]["calls"] == len(AgentType)
        assert usage["total"]["tokens_in"] > 0
        assert usage["total"]["tokens_out"] > 0
        assert {row["agent_type"] for row in usage["by_agent"]} == {a.value for a in AgentType}
        assert [(row["provider"], row["model"], row["calls"]) for row in usage["by_model"]] == [
            ("offline", "botarmy-offline-1", len(AgentType))
        ]

    stored = await rows(settings, select(Artifact).where(Artifact.project_id == uuid.UUID(project_id)))
    documents = [artifact for artifact in stored if artifact.granularity == "document"]
    assert len(documents) == sum(len(kinds) for kinds in AGENT_ARTIFACTS.values())
    # Each document is also stored as its sections, which can be injected on their own.
    sections = [artifact for artifact in stored if artifact.granularity == "section"]
    assert {section.parent_id for section in sections} == {document.id for document in documents}
    for artifact in documents:
        msgspec.convert(artifact.content, CONTENT_TYPES[ArtifactType(artifact.artifact_type)])
        assert artifact.meta["validation_status"] == "valid"
        assert 0 <= artifact.meta["confidence"] <= 1


async def test_context_artifacts_are_injected_and_recorded(client: AsyncClient) -> None:
    project_id = await new_project(client)
    analyst = await wait_for_task(
        client, await submit(client, project_id, "analyst", "Specify a bug tracker"), "completed"
    )
    spec_ids = analyst["output"]["artifact_ids"]
    architect_id = await submit(client, project_id, "architect", "Design the bug tracker", context_ids=spec_ids)
    architect = await wait_for_task(client, architect_id, "completed")
    assert sorted(architect["output"]["context"]["injected"]) == sorted(spec_ids)
    assert architect["context_ids"] == spec_ids
    unknown = await client.post(
        f"/api/v1/projects/{project_id}/tasks",
        json={"agent_type": "coder", "instructions": "x", "context_ids": [str(uuid.uuid4())]},
    )
    assert unknown.status_code in (400, 422)
    assert "context_ids" in unknown.text


# -- failures, retries, questions, budgets ----------------------------------------------------


async def failure_request(settings: Settings, task_id: str) -> HitlRequest:
    requests = await rows(settings, select(HitlRequest).where(HitlRequest.task_id == uuid.UUID(task_id)))
    assert [(r.kind, r.status, r.options) for r in requests] == [("task_failure", "pending", ["approve", "reject"])]
    request: HitlRequest = requests[0]
    return request


async def test_transient_failures_are_retried_then_a_human_decides(client: AsyncClient, settings: Settings) -> None:
    project_id = await new_project(client)
    task_id = await submit(client, project_id, "coder", "Build it [[offline:fail=transient]]")
    # After the retries the task waits for a human with the failure, instead of failing outright.
    task = await wait_for_task(client, task_id, "waiting_for_hitl")
    assert "offline" in task["error"]
    assert "transient" in task["error"]
    assert task["output"]["code"] == "server_error"
    attempts = await rows(settings, select(LlmUsage.outcome).where(LlmUsage.task_id == uuid.UUID(task_id)))
    assert attempts == ["server_error"] * 4  # the first call and three retries (BOTARMY_MODEL_RETRY_DELAYS)
    agents = (await client.get("/api/v1/agents/status", params={"project_id": project_id})).json()["items"]
    assert [(row["agent_type"], row["status"]) for row in agents if row["status"] != "idle"] == [("coder", "error")]
    assert {row["agent_type"] for row in agents} == {a.value for a in AgentType}
    request = await failure_request(settings, task_id)
    assert "transient" in request.question
    # Approve: another try (which fails the same way, and asks again); reject: it fails.
    approved = await client.post(f"/api/v1/hitl/{request.id}/respond", json={"action": "approve"})
    assert approved.status_code == 200, approved.text
    await eventually(
        lambda: rows(settings, select(LlmUsage.id).where(LlmUsage.task_id == uuid.UUID(task_id))),
        lambda calls: len(calls) == 8,
        timeout=20,
    )
    again = await eventually(
        lambda: rows(settings, select(HitlRequest).where(HitlRequest.task_id == uuid.UUID(task_id))),
        lambda requests: len(requests) == 2,
        timeout=20,
    )
    second = next(r for r in again if r.id != request.id)
    declined = await client.post(
        f"/api/v1/hitl/{second.id}/respond", json={"action": "reject", "comment": "the provider is down for today"}
    )
    assert declined.status_code == 200, declined.text
    failed = await wait_for_task(client, task_id, "failed")
    assert "the provider is down for today" in failed["error"]


async def test_permanent_failure_is_not_retried(client: AsyncClient, settings: Settings) -> None:
    project_id = await new_project(client)
    task_id = await submit(client, project_id, "tester", "Test it [[offline:fail=permanent]]")
    await wait_for_task(client, task_id, "waiting_for_hitl")
    attempts = await rows(settings, select(LlmUsage.outcome).where(LlmUsage.task_id == uuid.UUID(task_id)))
    assert attempts == ["bad_request"]
    await failure_request(settings, task_id)


async def test_an_invalid_answer_is_a_failed_attempt_with_the_reason(client: AsyncClient, settings: Settings) -> None:
    project_id = await new_project(client)
    task_id = await submit(client, project_id, "analyst", "Specify [[offline:invalid]]")
    task = await wait_for_task(client, task_id, "waiting_for_hitl")
    assert "confidence" in task["error"]
    assert "does not match" in task["error"]
    attempts = await rows(settings, select(LlmUsage.outcome).where(LlmUsage.task_id == uuid.UUID(task_id)))
    assert attempts == ["invalid_output"] * 4
    assert await rows(settings, select(Artifact.id).where(Artifact.task_id == uuid.UUID(task_id))) == []
    await failure_request(settings, task_id)


async def test_a_question_the_agent_cannot_answer_waits_for_a_human(client: AsyncClient, settings: Settings) -> None:
    project_id = await new_project(client)
    task_id = await submit(client, project_id, "architect", "Design [[offline:question=Which cloud do we use?]]")
    task = await wait_for_task(client, task_id, "waiting_for_hitl")
    assert task["output"]["open_questions"] == ["Which cloud do we use?"]
    requests = await rows(settings, select(HitlRequest).where(HitlRequest.task_id == uuid.UUID(task_id)))
    assert [(r.kind, r.status, r.question) for r in requests] == [
        ("low_confidence", "pending", "Which cloud do we use?")
    ]
    assert requests[0].artifact_ids == task["output"]["artifact_ids"]
    agents = (await client.get("/api/v1/agents/status", params={"project_id": project_id})).json()["items"]
    busy = [(row["status"], row["current_task_id"]) for row in agents if row["status"] != "idle"]
    assert busy == [("waiting_for_hitl", task_id)]


async def test_a_call_over_budget_is_not_made(client: AsyncClient, settings: Settings) -> None:
    project_id = await new_project(client, budget_tokens=50)
    task_id = await submit(client, project_id, "analyst", "Specify a marketplace")
    task = await wait_for_task(client, task_id, "waiting_for_hitl")
    assert task["output"]["blocked_by"] == "budget"
    assert "project tokens budget" in task["output"]["message"]
    assert await rows(settings, select(LlmUsage.id).where(LlmUsage.task_id == uuid.UUID(task_id))) == []
    requests = await rows(settings, select(HitlRequest).where(HitlRequest.task_id == uuid.UUID(task_id)))
    assert [(r.kind, r.urgency) for r in requests] == [("budget", "high")]
    usage = (await client.get(f"/api/v1/projects/{project_id}/usage")).json()
    assert usage["total"] == {"calls": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}


async def test_per_agent_budget_from_project_settings(client: AsyncClient) -> None:
    project_id = await new_project(client, settings={"agent_budgets": {"coder": {"tokens": 20}}})
    blocked = await wait_for_task(client, await submit(client, project_id, "coder", "Build"), "waiting_for_hitl")
    assert "agent tokens budget of the coder" in blocked["output"]["message"]
    await wait_for_task(client, await submit(client, project_id, "tester", "Test"), "completed")


# -- cancel and timeout, against the real worker in services mode ------------------------------


async def test_cancel_stops_a_running_model_call(client: AsyncClient, settings: Settings) -> None:
    project_id = await new_project(client)
    task_id = await submit(client, project_id, "coder", "Build slowly [[offline:delay=30]]")
    await wait_for_task(client, task_id, "working")
    await asyncio.sleep(0.3)
    started = time.monotonic()
    cancelled = await client.post(f"/api/v1/tasks/{task_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    # The worker notices within about a second and frees the agent; nothing of the attempt is stored.
    agents = await eventually(
        lambda: client.get("/api/v1/agents/status", params={"project_id": project_id}),
        lambda r: all(row["status"] == "idle" for row in r.json()["items"]),
        timeout=5,
    )
    assert time.monotonic() - started < 3, agents.json()
    await asyncio.sleep(1)
    task = await task_status(client, task_id)
    assert task["status"] == "cancelled"
    assert task["output"] is None
    again = await client.post(f"/api/v1/tasks/{task_id}/cancel")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"]
    assert (await client.post(f"/api/v1/tasks/{uuid.uuid4()}/cancel")).status_code == 404


async def test_a_task_cancelled_before_it_starts_never_starts(own_services_env: dict[str, str], tmp_path: Path) -> None:
    settings = load_settings(own_services_env)
    async with app_client(settings) as client:
        project_id = await new_project(client)
        task_id = await submit(client, project_id, "analyst", "Never")
        assert (await task_status(client, task_id))["status"] == "queued"  # no worker runs yet
        assert (await client.post(f"/api/v1/tasks/{task_id}/cancel")).json()["status"] == "cancelled"
        worker = start_worker(own_services_env, tmp_path / "worker.log")
        try:
            later = await submit(client, project_id, "analyst", "After")
            await wait_for_task(client, later, "completed", timeout=30)
        finally:
            worker.stop()
        task = await task_status(client, task_id)
        assert (task["status"], task["attempts"], task["started_at"]) == ("cancelled", 0, None)


async def test_the_sweep_fails_a_task_past_its_timeout(client: AsyncClient) -> None:
    project_id = await new_project(client)
    task_id = await submit(client, project_id, "deployer", "Ship [[offline:delay=30]]", timeout_seconds=1)
    task = await wait_for_task(client, task_id, "failed", timeout=15)
    assert task["error"] == "timed out: no result within 1 s"
    agents = await eventually(
        lambda: client.get("/api/v1/agents/status", params={"project_id": project_id}),
        lambda r: {row["agent_type"]: row["status"] for row in r.json()["items"]}["deployer"] == "error",
        timeout=5,
    )
    assert agents.status_code == 200


# -- personas and prompts ---------------------------------------------------------------------


def test_the_sample_bmad_agent_file_loads_as_a_persona() -> None:
    persona = load_bmad_agent(shared_path("bmad-samples/agents/analyst.md"))
    assert persona.agent_type == AgentType.ANALYST
    assert persona.name == "Mary"
    assert persona.role == "Insightful Analyst & Strategic Ideation Partner"
    assert len(persona.principles) >= 5
    assert "Mary" in persona.system_prompt()
    assert persona.principles[0] in persona.system_prompt()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("# no yaml here", "no ```yaml block"),
        ("```yaml\nagent: [unclosed\n```", "does not parse"),
        ("```yaml\npersona: {}\n```", "no 'agent' mapping"),
        ("```yaml\nagent: {id: juggler}\n```", "maps to none of our agents"),
    ],
)
def test_bad_bmad_agent_files_say_why(text: str, reason: str) -> None:
    with pytest.raises(PersonaFileError) as caught:
        parse_bmad_agent(text, "agents/x.md")
    assert str(caught.value).startswith("agents/x.md: ")
    assert reason in str(caught.value)


def test_prompt_injects_the_most_relevant_context_within_budget() -> None:
    def item(kind: ArtifactType, title: str, size: int) -> ContextItem:
        return ContextItem(
            artifact_id=uuid.uuid4(), artifact_type=kind.value, title=title, content={"text": "x" * size}
        )

    plan = item(ArtifactType.IMPLEMENTATION_PLAN, "Plan", 1000)
    spec = item(ArtifactType.SOFTWARE_SPECIFICATION, "Spec", 1000)
    notes = item(ArtifactType.USER_INPUT, "Payments notes", 1000)
    huge = item(ArtifactType.SYSTEM_ARCHITECTURE, "Architecture", 50_000)
    built = build_prompt(
        BUILT_IN[AgentType.CODER],
        "Implement payments",
        AGENT_ARTIFACTS[AgentType.CODER],
        [notes, spec, huge, plan],
        budget_chars=5000,
    )
    # The coder reads the plan first, then the architecture (too big here), then the spec.
    assert built.injected == [plan.artifact_id, spec.artifact_id, notes.artifact_id]
    assert built.omitted == [huge.artifact_id]
    prompt = built.request.prompt
    assert prompt.index("## Plan") < prompt.index("## Spec") < prompt.index("## Payments notes")
    assert "Architecture" not in prompt
    assert "source_code" in prompt
    assert built.request.system.startswith("You are Cody, the coder")


async def test_usage_counts_only_this_project(client: AsyncClient, settings: Settings) -> None:
    first = await new_project(client)
    second = await new_project(client)
    await wait_for_task(client, await submit(client, first, "analyst", "A"), "completed")
    usage = (await client.get(f"/api/v1/projects/{second}/usage")).json()
    assert usage["total"]["calls"] == 0
    assert usage["by_agent"] == []
    assert (await client.get(f"/api/v1/projects/{uuid.uuid4()}/usage")).status_code == 404
    count = await rows(
        settings, select(func.count()).select_from(LlmUsage).where(LlmUsage.project_id == uuid.UUID(first))
    )
    assert count == [1]


async def test_usage_until_counts_the_calls_made_up_to_then(client: AsyncClient) -> None:
    """`botarmy run --resume` shows each replayed step's figures as they were, not today's."""
    project_id = await new_project(client)
    await wait_for_task(client, await submit(client, project_id, "analyst", "A"), "completed")
    events = (await client.get(f"/api/v1/projects/{project_id}/events", params={"limit": 100})).json()["items"]
    then = events[-1]["timestamp"]
    await wait_for_task(client, await submit(client, project_id, "architect", "B"), "completed")
    path = f"/api/v1/projects/{project_id}/usage"
    assert (await client.get(path)).json()["total"]["calls"] == 2
    assert (await client.get(path, params={"until": then})).json()["total"]["calls"] == 1
    assert (await client.get(path, params={"until": "1700000000"})).status_code == 400

"""Every workflow of the real BMAD-METHOD v4 core, end to end on the offline model.

For each workflow of `../shared/bmad-v4/bmad-core/workflows/`, at low oversight and at high oversight
with every gate and question approved, step by step: each step's task received the artifacts its
`requires` names (or the step records which input was missing); no document is replaced by a review;
a review's findings are its checklist's items; the sharded PRD's epics each get their story; and the
final documents (PRD, architecture, stories, code) are about the idea, linked by `derived_from` all
the way from the code back to it. The agents speak with the personas of the BMAD files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from httpx import AsyncClient

from app.artifacts.models import ArtifactType
from app.config import load_settings
from app.llm.base import ModelRequest
from app.llm.offline import OfflineProvider
from app.workflows.context import kind_of
from tests.conftest import FAST_ENV, SHARED_DIR, shared_path
from tests.fake_providers import FakeProviderServer, Reply
from tests.fake_providers import fake_provider_server_fixture as fake_provider_server_fixture
from tests.helpers import app_client, eventually

IDEA = "A todo list for teams: tasks with due dates, assignees and reminders"


def corpus() -> Path:
    return shared_path("bmad-v4/bmad-core")


def embedded_settings_env(tmp_path: Path) -> dict[str, str]:
    return {**FAST_ENV, "BOTARMY_DATA_DIR": str(tmp_path / "data")}


def workflow_ids() -> list[str]:
    directory = SHARED_DIR / "bmad-v4/bmad-core/workflows"
    return sorted(path.stem for path in directory.glob("*.yaml")) if directory.is_dir() else ["(no corpus)"]


@pytest.fixture
async def v4_client(tmp_path: Path) -> AsyncIterator[AsyncClient]:
    settings = load_settings({**embedded_settings_env(tmp_path), "BOTARMY_BMAD_DIR": str(corpus())})
    async with app_client(settings, timeout=60) as client:
        yield client


class Run:
    """What one execution made, read back through the API."""

    def __init__(self, client: AsyncClient, execution: dict[str, Any], definition: dict[str, Any]) -> None:
        self.client = client
        self.execution = execution
        self.definition = definition
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}

    async def artifact(self, artifact_id: str) -> dict[str, Any]:
        if artifact_id not in self.artifacts:
            response = await self.client.get(f"/api/v1/artifacts/{artifact_id}")
            assert response.status_code == 200, response.text
            self.artifacts[artifact_id] = response.json()
        return self.artifacts[artifact_id]

    async def task(self, task_id: str) -> dict[str, Any]:
        if task_id not in self.tasks:
            self.tasks[task_id] = (await self.client.get(f"/api/v1/tasks/{task_id}")).json()
        return self.tasks[task_id]

    def raw_step(self, index: int) -> dict[str, Any]:
        step: dict[str, Any] = self.definition["sequence"][index]
        return step

    def produced(self, step: dict[str, Any]) -> list[str]:
        return [artifact_id for run in step["runs"] for artifact_id in run["artifact_ids"]]


async def run_workflow(client: AsyncClient, workflow_id: str, oversight: str) -> Run:
    project = (await client.post("/api/v1/projects", json={"name": "Team todo", "oversight_level": oversight})).json()
    response = await client.post(
        "/api/v1/executions",
        json={"project_id": project["id"], "workflow_id": workflow_id, "inputs": {"idea": IDEA}},
    )
    assert response.status_code == 202, response.text
    execution_id = response.json()["id"]
    answered: set[str] = set()
    for _ in range(200):
        body = (
            await eventually(
                lambda: client.get(f"/api/v1/executions/{execution_id}"),
                lambda r: r.json()["status"] in ("waiting_for_hitl", "completed", "failed", "cancelled"),
                timeout=60,
                interval=0.05,
            )
        ).json()
        if body["status"] != "waiting_for_hitl":
            break
        pending = (
            await client.get(f"/api/v1/hitl/project/{project['id']}/requests", params={"status": "pending"})
        ).json()["items"]
        for request in pending:  # every gate, condition and question: approved
            assert "its work" not in request["question"], request  # a condition says what the step does
            if request["request_id"] not in answered:
                answer = await client.post(f"/api/v1/hitl/{request['request_id']}/respond", json={"action": "approve"})
                assert answer.status_code == 200, answer.text
                answered.add(request["request_id"])
    assert body["status"] == "completed", body
    text = (corpus() / "workflows" / f"{workflow_id}.yaml").read_text(encoding="utf-8")
    definition = yaml.safe_load(text)["workflow"]
    return Run(client, body, definition)


def names(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(item) for item in value] if isinstance(value, list) else [str(value)]


def stages_ran(steps: list[dict[str, Any]]) -> dict[str, bool]:
    """Each stage's gate key (its phase, `#n` from the phase's second run of steps on), in order:
    whether any of its steps completed."""
    ran: dict[str, bool] = {}
    seen: dict[str, int] = {}
    previous = None
    for step in steps:
        phase = step["phase"]
        if phase != previous:
            seen[phase] = seen.get(phase, 0) + 1
            key = phase if seen[phase] == 1 else f"{phase}#{seen[phase]}"
            previous = phase
        ran[key] = ran.get(key, False) or step["status"] == "completed"
    return ran


async def check_inputs(run: Run, step: dict[str, Any]) -> None:
    """Each run's task got what the step requires, or the step says which input was missing."""
    raw = run.raw_step(step["index"])
    for task_id in (r["task_id"] for r in step["runs"]):
        task = await run.task(task_id)
        types = {(await run.artifact(artifact_id))["artifact_type"] for artifact_id in task["context_ids"]}
        assert "user_input" in types  # the idea, always
        for name in names(raw.get("requires")):
            kind = kind_of(name)
            assert kind is not None, f"step {step['index']}: {name!r} maps to nothing"
            wanted = types & {kind.value} if isinstance(kind, ArtifactType) else types - {"user_input"}
            reported = any(missing.startswith(name.split(" ")[0]) for missing in step["missing_inputs"])
            assert wanted or reported, (step["index"], name, types, step["missing_inputs"])


async def check_persona(run: Run, step: dict[str, Any]) -> None:
    """The step's BMAD agent file speaks, and its `uses:` task, template or checklist is in the prompt."""
    raw = run.raw_step(step["index"])
    agent = str(raw.get("agent", "")).split("/")[0]
    for task_id in (r["task_id"] for r in step["runs"]):
        record = (await run.task(task_id))["output"]["prompt"]
        assert record["persona_source"].endswith(f"agents/{agent}.md"), (step["index"], record)
        if raw.get("uses"):
            assert record["task_file"] or record["checklist"] == raw["uses"], (step["index"], record)


async def derived_from_reaches_the_idea(run: Run, artifact_id: str) -> set[str]:
    """Types seen walking `derived_from` from an artifact; it must reach the idea."""
    seen: set[str] = set()
    types: set[str] = set()
    frontier = [artifact_id]
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        artifact = await run.artifact(current)
        types.add(artifact["artifact_type"])
        frontier += [str(value) for value in artifact["metadata"].get("derived_from", [])]
    assert "user_input" in types, (artifact_id, types)
    return types


@pytest.mark.parametrize("oversight", ["low", "high"])
@pytest.mark.parametrize("workflow_id", workflow_ids())
async def test_a_real_bmad_workflow_makes_one_coherent_body_of_work(
    v4_client: AsyncClient, workflow_id: str, oversight: str
) -> None:
    run = await run_workflow(v4_client, workflow_id, oversight)
    steps = [step for step in run.execution["steps"] if step["status"] == "completed"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for step in steps:
        await check_inputs(run, step)
        await check_persona(run, step)
        raw = run.raw_step(step["index"])
        made = [await run.artifact(artifact_id) for artifact_id in run.produced(step)]
        assert made, f"step {step['index']} made nothing"
        reviewing = raw.get("validates") or str(raw.get("action", "")).startswith(("review", "epic_retro"))
        if reviewing:  # a review never replaces what it reviews
            assert {artifact["artifact_type"] for artifact in made} == {"review"}, step
            for review in made:
                assert review["metadata"]["related_artifacts"], review
        if raw.get("uses") == "po-master-checklist":
            items = [line for line in (corpus() / "checklists/po-master-checklist.md").read_text().splitlines()]
            checklist = [line for line in items if line.strip().startswith("- [ ]")]
            findings = made[0]["content"]["findings"]
            assert len(findings) == len(checklist) > 10
        for artifact in made:
            by_type.setdefault(artifact["artifact_type"], []).append(artifact)

    # The PRD is the PM's, never rewritten by a validation or sharding step.
    specifications = by_type["software_specification"]
    writers = {
        str(run.raw_step(step["index"]).get("agent"))
        for step in steps
        for artifact_id in run.produced(step)
        if run.artifacts[artifact_id]["artifact_type"] == "software_specification"
    }
    assert "po" not in writers and "sm" not in writers
    prd = specifications[-1]
    prd_text = str(prd["content"]).lower()
    assert "due date" in prd_text and "team" in prd_text, prd["content"]

    # Sharding: epics under the PRD; one story run per epic, each story under its epic.
    epics = by_type["epic"]
    assert len(epics) >= 2
    assert {epic["parent_id"] for epic in epics} <= {spec["id"] for spec in specifications}
    story_step = next(step for step in steps if run.raw_step(step["index"]).get("action") == "create_story")
    assert len(story_step["runs"]) == len(epics)
    stories = [artifact for artifact in by_type["story"] if artifact["parent_id"] is not None]
    assert {story["parent_id"] for story in stories} == {epic["id"] for epic in epics}

    # The architecture's components are the idea's features.
    features = {"tasks", "teams", "due_dates", "assignees", "reminders"}
    if "system_architecture" in by_type:
        architecture = by_type["system_architecture"][-1]
        assert features <= {component["name"] for component in architecture["content"]["components"]}
        assert all(word in str(architecture["content"]).lower() for word in ("due date", "assignee", "reminder"))

    # The dev cycle covers every story: the dev steps run once per story (then per story's code),
    # and the final code, one artifact per story, implements every story's and every feature's module.
    code_steps = [
        step for step in steps if any(run.artifacts[a]["artifact_type"] == "source_code" for a in run.produced(step))
    ]
    assert code_steps and all(len(step["runs"]) == len(stories) for step in code_steps)
    final_code = [run.artifacts[a] for a in run.produced(code_steps[-1])]
    modules = {
        file["path"].removeprefix("app/").removesuffix(".py")
        for code in final_code
        for file in code["content"]["files"]
    }
    assert {name for story in stories for name in story["content"]["components"]} | features <= modules
    marker = next(
        s for s in run.execution["steps"] if run.raw_step(s["index"]).get("step") == "repeat_development_cycle"
    )
    assert "implement_story runs for each story" in marker["reason"]
    # The code is about the idea, traceably derived from it through its own story (and only that one).
    for artifact in by_type["source_code"]:
        assert {"story", "user_input"} <= await derived_from_reaches_the_idea(run, artifact["id"])
        made_from = [run.artifacts[a] for a in artifact["metadata"]["derived_from"] if a in run.artifacts]
        assert len([a for a in made_from if a["artifact_type"] == "story"]) <= 1, artifact["title"]
    for code in final_code:
        story_id = code["title"].removeprefix("Code for story ").split(":")[0]
        assert f"Implements story {story_id} with the modules" in code["content"]["notes"], code["title"]
        if "system_architecture" in by_type:
            assert {"system_architecture"} <= await derived_from_reaches_the_idea(run, code["id"]), code["title"]
    fixes = [step for step in code_steps if run.raw_step(step["index"]).get("action") == "address_qa_feedback"]
    for step in fixes:  # a fix after QA reads the review of the code it fixes, and keeps to its story
        for task_id in (r["task_id"] for r in step["runs"]):
            context = [await run.artifact(a) for a in (await run.task(task_id))["context_ids"]]
            kinds = sorted(
                a["artifact_type"] for a in context if a["artifact_type"] in ("review", "source_code", "story")
            )
            assert kinds == ["review", "source_code", "story"], (step["index"], kinds)
    assert bool(fixes) == (oversight == "high")

    # A phase is gated when some step of it ran, never after a phase whose every step was skipped.
    ran = stages_ran(run.execution["steps"])
    assert all(ran[key] for key in run.execution["gates"]), (run.execution["gates"], ran)
    if oversight == "high":
        assert set(run.execution["gates"]) == {key for key in list(ran)[:-1] if ran[key]}

    documents = (await v4_client.get(f"/api/v1/projects/{run.execution['project_id']}/documents")).json()
    stages = {document["stage"] for document in documents["documents"]}
    assert {"prd", "stories"} <= stages
    assert ("architecture" in stages) == ("system_architecture" in by_type)
    stories_document = next(d for d in documents["documents"] if d["stage"] == "stories")
    assert "Acceptance Criteria" in stories_document["markdown"] and "due date" in stories_document["markdown"]
    assert prd["id"] in next(d for d in documents["documents"] if d["stage"] == "prd")["artifact_ids"]


async def test_every_file_of_the_corpus_names_no_unmapped_artifact() -> None:
    """Every upstream name a v4 workflow `requires`, `creates` or `updates` maps to a type or to all documents."""
    unmapped = []
    for path in sorted((corpus() / "workflows").glob("*.yaml")):
        for step in yaml.safe_load(path.read_text(encoding="utf-8"))["workflow"]["sequence"]:
            for key in ("requires", "creates", "updates"):
                for name in names(step.get(key)):
                    first = name.split(" ")[0]
                    if kind_of(name) is None and first not in {"multiple"}:
                        unmapped.append(f"{path.name}: {key} {name}")
    assert not unmapped


async def test_a_phase_that_recurs_is_gated_at_every_occurrence(v4_client: AsyncClient) -> None:
    """Medium oversight gates design, build and launch: in brownfield-service the design phase comes
    back after the PRD, and its second occurrence is gated too."""
    run = await run_workflow(v4_client, "brownfield-service", "medium")
    gates = run.execution["gates"]
    assert sorted(gates) == ["build", "design", "design#2"]
    assert {gate["phase"] for gate in gates.values()} == {"design", "build"}
    assert all(gate["status"] == "approved" for gate in gates.values())


async def test_no_gate_follows_a_phase_whose_every_step_was_skipped(v4_client: AsyncClient) -> None:
    """brownfield-fullstack at medium oversight: its first design phase is one step with no agent of
    ours (skipped), so no "the design phase is done" gate is asked there."""
    run = await run_workflow(v4_client, "brownfield-fullstack", "medium")
    ran = stages_ran(run.execution["steps"])
    assert not all(ran.values())  # some phase really was skipped whole
    assert set(run.execution["gates"]) == {
        key for key in list(ran)[:-1] if ran[key] and key.split("#")[0] in ("design", "build", "launch")
    }


async def test_each_step_speaks_with_the_persona_of_its_bmad_agent_file(
    tmp_path: Path, fake_provider_server: FakeProviderServer
) -> None:
    """Through an OpenAI-compatible endpoint that records requests: the analyst step's system prompt
    is Mary's (agents/analyst.md), the PM step's John's (agents/pm.md), both run by our analyst."""
    answer = await offline_answer(["software_specification", "project_plan"])
    fake_provider_server.script([Reply(answer), Reply(answer)])
    env = {
        **embedded_settings_env(tmp_path),
        "BOTARMY_BMAD_DIR": str(corpus()),
        "BOTARMY_MODEL_ANALYST": "openai_compatible:llama3.1",
        "BOTARMY_OPENAI_COMPATIBLE_BASE_URL": fake_provider_server.openai_base_url,
        "BOTARMY_OPENAI_COMPATIBLE_API_KEY": "sk-test",
    }
    async with app_client(load_settings(env), timeout=60) as client:
        project = (await client.post("/api/v1/projects", json={"name": "Team todo"})).json()
        started = await client.post(
            "/api/v1/executions",
            json={"project_id": project["id"], "workflow_id": "greenfield-service", "inputs": {"idea": IDEA}},
        )
        execution_id = started.json()["id"]
        await eventually(
            lambda: client.get(f"/api/v1/executions/{execution_id}"),
            lambda r: r.json()["steps"][1]["status"] in ("completed", "failed"),
            timeout=30,
        )
        await client.post(f"/api/v1/executions/{execution_id}/cancel")
        body = (await client.get(f"/api/v1/executions/{execution_id}")).json()
        pm_task = (await client.get(f"/api/v1/tasks/{body['steps'][1]['task_id']}")).json()
    systems = [request.json["messages"][0]["content"] for request in fake_provider_server.requests[:2]]
    assert "You are Mary" in systems[0] and "Insightful Analyst & Strategic Ideation Partner" in systems[0]
    assert "You are John" in systems[1] and "Investigative Product Strategist" in systems[1]
    assert pm_task["agent_type"] == "analyst"
    assert pm_task["output"]["prompt"]["persona"] == "John"
    assert pm_task["output"]["prompt"]["persona_source"].endswith("agents/pm.md")


async def offline_answer(types: list[str]) -> str:
    """A schema-valid answer of these artifact types, as a real model would send it."""
    request = ModelRequest(
        system="",
        prompt="",
        output_schema={},
        hints={
            "agent_type": "analyst",
            "artifact_types": types,
            "context": [{"artifact_type": "user_input", "title": "Product idea", "content": {"text": IDEA}}],
        },
    )
    return (await OfflineProvider().complete(request, model="x")).text

"""The BMAD core: the real sample files load as they are, bad files are reported, the API reads it."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from httpx import AsyncClient

from app.bmad.loader import load_core
from app.bmad.services import DEFAULT_CORE_DIR
from app.config import load_settings
from app.tasks.models import AgentType
from tests.conftest import FAST_ENV, SHARED_DIR
from tests.helpers import app_client

SAMPLES = SHARED_DIR / "bmad-samples"


def test_the_real_sample_files_load_as_they_are() -> None:
    core = load_core(SAMPLES)
    assert core.problems == []
    workflow = core.workflows["greenfield-service"]
    assert workflow.name == "Greenfield Service/API Development"
    assert [step.agent for step in workflow.steps[:3]] == ["analyst", "pm", "architect"]
    assert [step.phase for step in workflow.steps[:3]] == ["discovery", "plan", "design"]
    assert workflow.steps[1].agent_type == AgentType.ANALYST  # pm does the analyst's work here
    assert workflow.steps[1].requires == ["project-brief.md"]
    assert workflow.steps[3].condition == "architecture_suggests_prd_changes"
    story = next(step for step in workflow.steps if step.repeats)
    assert (story.agent, story.repeats, story.agent_type) == ("sm", "for_each_epic", AgentType.ORCHESTRATOR)
    assert any(step.optional for step in workflow.steps)
    # What the engine cannot run is kept and reported, not dropped.
    assert any("various" in note for note in workflow.unsupported)
    assert core.templates["prd-template-v2"].name == "Product Requirements Document"
    assert core.agents["analyst"].name == "Mary"
    team = core.teams["team-fullstack"]
    assert "greenfield-service.yaml" in team.workflows
    assert "architect" in team.agents


def test_our_default_core_loads_and_covers_six_phases() -> None:
    core = load_core(DEFAULT_CORE_DIR)
    assert core.problems == []
    workflow = core.workflows["botarmy-sdlc"]
    assert [step.phase for step in workflow.steps] == ["discovery", "plan", "design", "build", "validate", "launch"]
    assert {step.agent_type for step in workflow.steps} == set(AgentType)
    assert workflow.steps[-1].side_effects is True
    assert workflow.unsupported == []
    assert {"botarmy-prd", "botarmy-architecture", "botarmy-test-report"} <= set(core.templates)


def test_a_malformed_file_is_reported_and_the_rest_loads(tmp_path: Path) -> None:
    root = tmp_path / "core"
    shutil.copytree(SAMPLES, root)
    (root / "workflows" / "broken.yaml").write_text("workflow: [unclosed\n")
    (root / "workflows" / "no-steps.yaml").write_text("workflow:\n  id: x\n")
    (root / "workflows" / "bad-phase.yaml").write_text(
        "workflow:\n  id: y\n  sequence:\n    - agent: dev\n      phase: party\n"
    )
    (root / "templates" / "broken-tmpl.yaml").write_text("template:\n  id: t\nsections:\n  - title: no id\n")
    (root / "agents" / "stranger.md").write_text("```yaml\nagent: {id: juggler}\n```\n")
    (root / "agent-teams" / "team-x.yaml").write_text("- not a bundle\n")
    outside = tmp_path / "secret.yaml"
    outside.write_text("workflow:\n  id: leaked\n  sequence: [{agent: dev}]\n")
    (root / "workflows" / "link.yaml").symlink_to(outside)
    core = load_core(root)
    reasons = {Path(problem.path).name: problem.reason for problem in core.problems}
    assert "does not parse" in reasons["broken.yaml"]
    assert "no 'sequence'" in reasons["no-steps.yaml"]
    assert "phase 'party'" in reasons["bad-phase.yaml"]
    assert "id" in reasons["broken-tmpl.yaml"]
    assert "juggler" in reasons["stranger.md"]
    assert "bundle" in reasons["team-x.yaml"]
    assert "outside" in reasons["link.yaml"]
    assert "leaked" not in core.workflows
    assert "greenfield-service" in core.workflows  # the good files still load
    assert "prd-template-v2" in core.templates


@pytest.fixture
async def bmad_client(tmp_path: Path) -> AsyncIterator[AsyncClient]:
    settings = load_settings({**FAST_ENV, "BOTARMY_DATA_DIR": str(tmp_path / "data"), "BOTARMY_BMAD_DIR": str(SAMPLES)})
    async with app_client(settings, role="viewer") as client:
        yield client


async def test_workflow_api(bmad_client: AsyncClient) -> None:
    listed = (await bmad_client.get("/api/v1/workflows")).json()["items"]
    assert [w["id"] for w in listed] == ["botarmy-sdlc", "greenfield-service"]
    assert listed[0]["phases"] == ["discovery", "plan", "design", "build", "validate", "launch"]
    detail = (await bmad_client.get("/api/v1/workflows/greenfield-service")).json()
    assert detail["steps"][0]["creates"] == ["project-brief.md"]
    assert "prd.md" in detail["artifacts"]
    assert detail["unsupported"]
    missing = await bmad_client.get("/api/v1/workflows/nope")
    assert missing.status_code == 404
    assert "botarmy-sdlc" in missing.json()["detail"]
    teams = (await bmad_client.get("/api/v1/workflows/greenfield-service/teams")).json()["items"]
    assert [team["id"] for team in teams] == ["team-fullstack"]


async def test_template_api(bmad_client: AsyncClient) -> None:
    listed = (await bmad_client.get("/api/v1/templates")).json()["items"]
    assert "prd-template-v2" in [t["id"] for t in listed]
    detail = (await bmad_client.get("/api/v1/templates/prd-template-v2")).json()
    assert "project_name" in detail["variables"]
    assert detail["sections"][0]["id"] == "goals-context"
    values = {"project_name": "Shop", "sections": {"goals": ["Sell furniture"], "functional": ["FR1: List items"]}}
    rendered = (await bmad_client.post("/api/v1/templates/prd-template-v2/render", json={"values": values})).json()
    assert rendered["markdown"].startswith("# Shop Product Requirements Document (PRD)")
    assert "- Sell furniture" in rendered["markdown"]
    check = (
        await bmad_client.post(
            "/api/v1/templates/prd-template-v2/validate", json={"values": {"sections": {"goals": "x"}}}
        )
    ).json()
    assert check["valid"] is False
    assert "project_name" in check["missing_variables"]
    assert check["problems"]
    bad = await bmad_client.post("/api/v1/templates/prd-template-v2/render", json={"vals": {}})
    assert bad.status_code == 400


async def test_team_api(bmad_client: AsyncClient) -> None:
    ids = [team["id"] for team in (await bmad_client.get("/api/v1/teams")).json()["items"]]
    assert ids == ["team-botarmy", "team-fullstack"]
    ours = (await bmad_client.get("/api/v1/teams/team-botarmy/validate")).json()
    assert ours == {"team_id": "team-botarmy", "valid": True, "problems": []}
    theirs = (await bmad_client.get("/api/v1/teams/team-fullstack/validate")).json()
    assert theirs["valid"] is False
    assert "workflow 'brownfield-service.yaml' is not loaded" in theirs["problems"]
    assert (await bmad_client.get("/api/v1/teams/team-nobody")).status_code == 404
    assert (await bmad_client.get("/api/v1/bmad/problems")).status_code == 403  # a viewer token

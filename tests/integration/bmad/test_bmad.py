"""The BMAD core: real BMAD-METHOD files load as they are, what is not run is listed, bad files are
reported, a bad BOTARMY_BMAD_DIR stops start-up, the API reads it all."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from httpx import AsyncClient

from app.bmad.loader import load_core
from app.bmad.services import DEFAULT_CORE_DIR, BmadService
from app.config import SettingsError, load_settings
from app.tasks.models import AgentType
from tests.conftest import FAST_ENV, shared_path
from tests.helpers import BOTARMY, REPO_ROOT, app_client


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


AGENT_FILE = """# {id}

```yaml
agent:
  name: {name}
  id: {id}
  title: {title}
persona:
  role: {title} who checks
  style: brief
  core_principles:
    - Say what is missing
```
"""


# -- the project's own files: tolerance rules, without ../shared ------------------------------


def test_our_default_core_loads_and_covers_six_phases() -> None:
    core = load_core(DEFAULT_CORE_DIR)
    assert core.problems == []
    assert core.unsupported == []
    workflow = core.workflows["botarmy-sdlc"]
    assert [step.phase for step in workflow.steps] == ["discovery", "plan", "design", "build", "validate", "launch"]
    assert {step.agent_type for step in workflow.steps} == set(AgentType)
    assert workflow.steps[-1].side_effects is True
    assert workflow.unsupported == []
    assert {"botarmy-prd", "botarmy-architecture", "botarmy-test-report"} <= set(core.templates)
    assert core.config == {}
    assert core.document("anything") is None


def test_an_agent_file_with_an_unknown_id_loads_as_unsupported(tmp_path: Path) -> None:
    write(tmp_path, "agents/juggler.md", AGENT_FILE.format(id="juggler", name="Jo", title="Juggler"))
    write(tmp_path, "agents/qa.md", AGENT_FILE.format(id="qa", name="Quinn", title="Test Architect"))
    core = load_core(tmp_path)
    assert core.problems == []
    assert core.other_agents["juggler"].name == "Jo"
    assert core.other_agents["juggler"].persona is None
    [note] = core.unsupported
    assert note.path.endswith("juggler.md")
    assert "'juggler' maps to none of our agents" in note.reason
    assert core.agents["qa"].agent_type == AgentType.TESTER
    assert sorted(core.loaded) == sorted(str(path) for path in (tmp_path / "agents").iterdir())
    assert core.persona("qa") is core.agents["qa"]
    assert core.persona("qa/dev") is core.agents["qa"]
    assert core.persona("juggler") is None
    assert core.persona(None) is None


def test_a_step_list_under_another_name_loads_and_is_listed(tmp_path: Path) -> None:
    write(
        tmp_path,
        "workflows/steps.yaml",
        "workflow:\n  id: by-steps\n  steps:\n    - agent: analyst\n      creates: brief.md\n    - agent: dev\n",
    )
    write(
        tmp_path,
        "workflows/game.yaml",
        "workflow:\n  id: game\n  full_game_sequence:\n    - agent: game-designer\n      creates: gdd.md\n"
        "    - agent: dev\n  prototype_sequence:\n    - step: prototype\n      agent: dev\n",
    )
    core = load_core(tmp_path)
    assert core.problems == []
    steps = core.workflows["by-steps"]
    assert [step.agent for step in steps.steps] == ["analyst", "dev"]
    assert steps.steps[0].creates == ["brief.md"]
    assert steps.unsupported == ["the steps are read from 'steps': BMAD names this list 'sequence'"]
    game = core.workflows["game"]
    assert [step.agent for step in game.steps] == ["game-designer", "dev"]
    assert game.steps[0].agent_type is None
    assert game.unsupported == [
        "the steps are read from 'full_game_sequence': BMAD names this list 'sequence'",
        "sequence[0]: agent 'game-designer' maps to none of our agents",
        "'prototype_sequence' is another list of steps: kept, not run",
    ]
    assert "prototype_sequence" in game.unknown


def test_unknown_fields_are_kept_and_listed(tmp_path: Path) -> None:
    write(
        tmp_path,
        "workflows/odd.yaml",
        "workflow:\n  id: odd\n  flow_diagram: graph TD\n  sequence:\n"
        "    - agent: pm\n      creates: prd.md\n      routes: {a: b}\n      optional_steps: [research]\n"
        "    - agent: architect\n      mood: cheerful\nextra_top: 1\n",
    )
    core = load_core(tmp_path)
    workflow = core.workflows["odd"]
    assert workflow.steps[0].unknown == {"routes": {"a": "b"}}
    assert workflow.steps[1].unknown == {"mood": "cheerful"}
    assert workflow.unknown == {"flow_diagram": "graph TD", "extra_top": 1}
    assert workflow.unsupported == [
        "sequence[0]: 'routes' is kept, not executed",
        "sequence[0]: optional_steps are not run (research)",
        "sequence[1]: 'mood' is kept, not executed",
        "'flow_diagram' is kept, not executed",
        "top-level 'extra_top' is kept, not executed",
    ]


def test_a_team_of_all_agents_is_valid(tmp_path: Path) -> None:
    write(tmp_path, "agent-teams/team-all.yaml", "bundle: {name: All}\nagents: [orchestrator, '*']\n")
    write(tmp_path, "agent-teams/team-odd.yaml", "bundle: {name: Odd}\nagents: [dev, juggler]\n")
    write(tmp_path, "workflows/w.yaml", "workflow:\n  id: w\n  sequence: [{agent: dev}]\n")
    core = load_core(tmp_path)
    assert core.problems == []
    service = BmadService(core)
    every = core.teams["team-all"]
    assert every.agents == ["orchestrator", "*"]
    assert (service.team_problems(every), service.team_unsupported(every)) == ([], [])
    odd = core.teams["team-odd"]
    assert service.team_problems(odd) == []
    assert service.team_unsupported(odd) == ["agent 'juggler' maps to none of our agents"]


def test_a_template_of_a_yaml_file_loads(tmp_path: Path) -> None:
    write(
        tmp_path,
        "templates/gate-tmpl.yaml",
        "template:\n  id: gate\n  name: Gate\n  version: 1.0\n  output: {format: yaml, filename: gate.yml}\n"
        "schema: 1\ngate: '{{gate_status}}'\n",
    )
    write(tmp_path, "templates/plain-tmpl.yaml", "template: {id: plain}\n")  # Markdown needs sections
    core = load_core(tmp_path)
    gate = core.templates["gate"]
    assert (gate.output_format, gate.sections, gate.version) == ("yaml", [], "1.0")
    assert gate.unknown == {"schema": 1, "gate": "{{gate_status}}"}
    assert gate.unsupported == [
        "output format 'yaml': its body (schema, gate) is kept, not rendered (only Markdown renders)"
    ]
    [problem] = core.problems
    assert problem.path.endswith("plain-tmpl.yaml")
    assert "missing 'sections:'" in problem.reason


def test_tasks_checklists_data_and_config_load_and_steps_resolve_them(tmp_path: Path) -> None:
    write(tmp_path, "tasks/create-story.md", "<!-- x -->\n\n```yaml\n# not a title\n```\n# Create Story Task\n\nDo.\n")
    checklist = (
        "# Story DoD\n\n## 1. Code\n\n- [ ] Tests pass\n  - [ ] Lint is clean\n- [x] Done already\n- not an item\n"
    )
    write(tmp_path, "checklists/story-dod.md", checklist)
    write(tmp_path, "data/kb.md", "no heading here\n")
    write(tmp_path, "data/same.md", "# Data same\n")
    write(tmp_path, "checklists/same.md", "# Checklist same\n")
    write(tmp_path, "core-config.yaml", "prd:\n  prdFile: docs/prd.md\nslashPrefix: BMad\n")
    write(tmp_path, "templates/brief-tmpl.yaml", "template: {id: brief-v1}\nsections: [{id: a}]\n")
    write(
        tmp_path,
        "workflows/w.yaml",
        "workflow:\n  id: w\n  sequence:\n"
        "    - agent: sm\n      uses: tasks/create-story.md\n"
        "    - agent: po\n      uses: story-dod\n      validates: all_artifacts\n"
        "    - agent: pm\n      uses: brief-tmpl\n"
        "    - agent: qa\n      validates: story-dod.md\n",
    )
    core = load_core(tmp_path)
    assert core.problems == []
    task = core.tasks["create-story"]
    assert (task.kind, task.title, task.items) == ("task", "Create Story Task", ())
    assert task.text.endswith("Do.\n")
    dod = core.checklists["story-dod"]
    assert (dod.kind, dod.title) == ("checklist", "Story DoD")
    assert dod.items == ("Tests pass", "Lint is clean", "Done already")
    assert dod.source == str(tmp_path / "checklists" / "story-dod.md")
    assert (core.data["kb"].kind, core.data["kb"].title) == ("data", "kb")
    assert core.config == {"prd": {"prdFile": "docs/prd.md"}, "slashPrefix": "BMad"}
    # Names as steps write them; tasks first, then checklists, then data.
    for name in ("create-story", "create-story.md", "tasks/create-story.md", " create-story "):
        assert core.document(name) is task
    assert core.document("checklists/story-dod.md") is dod
    assert core.document("same") is core.checklists["same"]
    assert core.document("data/same.md") is core.data["same"]
    assert core.document("tasks/story-dod") is None
    assert core.document("nothing") is None
    assert core.document("") is None
    workflow = core.workflows["w"]
    # `validates: all_artifacts` names what is validated, not a document; a template's outline is
    # part of the prompt: the engine runs both, so neither is listed.
    assert workflow.unresolved == []
    assert workflow.unsupported == workflow.unresolved
    assert len(core.loaded) == len([path for path in tmp_path.rglob("*") if path.is_file()])


def test_a_later_directory_resolves_what_an_earlier_one_named(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write(first, "workflows/w.yaml", "workflow:\n  id: w\n  sequence:\n    - agent: po\n      uses: po-check\n")
    core = load_core(first)
    assert core.workflows["w"].unresolved == [
        "sequence[0]: uses 'po-check' names no loaded task, checklist, data file or template"
    ]
    write(second, "checklists/po-check.md", "# PO\n- [ ] One\n")
    load_core(second, core)
    assert core.workflows["w"].unresolved == []
    assert core.workflows["w"].unsupported == []


def test_what_is_not_part_of_a_bmad_core_is_listed(tmp_path: Path) -> None:
    write(tmp_path, "utils/bmad-doc-template.md", "# x\n")
    write(tmp_path, "install-manifest.yaml", "x: 1\n")
    write(tmp_path, "agents/notes.txt", "x\n")
    core = load_core(tmp_path)
    assert core.problems == []
    reasons = {Path(item.path).name: item.reason for item in core.unsupported}
    assert reasons == {
        "utils": "not read: not part of a BMAD core",
        "install-manifest.yaml": "not read: not part of a BMAD core",
        "notes.txt": "a file not read: agents/ holds .md files",
    }


def test_a_malformed_file_is_reported_and_the_rest_loads(tmp_path: Path) -> None:
    root = tmp_path / "core"
    shutil.copytree(DEFAULT_CORE_DIR, root)
    write(root, "workflows/broken.yaml", "workflow: [unclosed\n")
    write(root, "workflows/no-steps.yaml", "workflow:\n  id: x\n  steps: []\n")
    write(root, "workflows/bad-phase.yaml", "workflow:\n  id: y\n  sequence:\n    - agent: dev\n      phase: party\n")
    write(root, "templates/broken-tmpl.yaml", "template:\n  id: t\nsections:\n  - title: no id\n")
    write(root, "agents/blank.md", "# no yaml block\n")
    write(root, "agent-teams/team-x.yaml", "- not a bundle\n")
    write(root, "core-config.yaml", "- a list\n")
    outside = tmp_path / "secret.yaml"
    outside.write_text("workflow:\n  id: leaked\n  sequence: [{agent: dev}]\n")
    (root / "workflows" / "link.yaml").symlink_to(outside)
    core = load_core(root)
    reasons = {Path(problem.path).name: problem.reason for problem in core.problems}
    assert "does not parse" in reasons["broken.yaml"]
    assert "no 'sequence'" in reasons["no-steps.yaml"]
    assert "phase 'party'" in reasons["bad-phase.yaml"]
    assert "id" in reasons["broken-tmpl.yaml"]
    assert "no ```yaml block" in reasons["blank.md"]
    assert "bundle" in reasons["team-x.yaml"]
    assert "not a mapping" in reasons["core-config.yaml"]
    assert "outside" in reasons["link.yaml"]
    assert "leaked" not in core.workflows
    assert "botarmy-sdlc" in core.workflows  # the good files still load
    assert "botarmy-prd" in core.templates


# -- BOTARMY_BMAD_DIR -------------------------------------------------------------------------


def test_a_bmad_dir_that_is_missing_or_empty_is_a_bad_setting(tmp_path: Path) -> None:
    write(tmp_path, "a-file", "x")
    (tmp_path / "empty").mkdir()
    write(tmp_path, "repo/bmad-core/agents/dev.md", "x")
    cases = {
        str(tmp_path / "nope"): "no such directory",
        str(tmp_path / "a-file"): "not a directory",
        str(tmp_path / "empty"): "holds none of agents, agent-teams, workflows",
        str(tmp_path / "repo"): f"(did you mean {str(tmp_path / 'repo' / 'bmad-core')!r}?)",
    }
    for value, reason in cases.items():
        with pytest.raises(SettingsError) as caught:
            load_settings({"BOTARMY_BMAD_DIR": value})
        message = str(caught.value)
        assert message.startswith(f"BOTARMY_BMAD_DIR={value!r} is invalid: ")
        assert reason in message
        assert "\n" not in message
    write(tmp_path, "ok/checklists/x.md", "# x")
    assert load_settings({"BOTARMY_BMAD_DIR": str(tmp_path / "ok")}).app.bmad_dir == str(tmp_path / "ok")


def test_serve_refuses_to_start_on_a_missing_bmad_dir(tmp_path: Path) -> None:
    missing = tmp_path / "bmad"
    result = subprocess.run(
        [*BOTARMY, "serve"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "BOTARMY_DATA_DIR": str(tmp_path), "BOTARMY_BMAD_DIR": str(missing)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"botarmy: BOTARMY_BMAD_DIR={str(missing)!r} is invalid: no such directory"
    ]


# -- the real BMAD-METHOD files (../shared) -----------------------------------------------------


def test_the_real_sample_files_load_as_they_are() -> None:
    core = load_core(shared_path("bmad-samples"))
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


def test_every_file_of_the_bmad_v4_core_loads() -> None:
    root = shared_path("bmad-v4/bmad-core")
    core = load_core(root)
    assert core.problems == []
    assert core.unsupported == []
    files = sorted(str(path) for path in root.rglob("*") if path.is_file())
    assert sorted(core.loaded) == files
    assert len(core.workflows) == len(list(root.glob("workflows/*.yaml")))
    assert len(core.templates) == len(list(root.glob("templates/*.yaml")))
    assert len(core.tasks) == len(list(root.glob("tasks/*.md")))
    assert len(core.checklists) == len(list(root.glob("checklists/*.md")))
    assert len(core.data) == len(list(root.glob("data/*.md")))
    assert set(core.agents) == {path.stem for path in root.glob("agents/*.md")}
    assert core.config["prd"]["prdFile"] == "docs/prd.md"
    po = core.document("po-master-checklist")
    assert po is not None
    assert (po.kind, po.title) == ("checklist", "Product Owner (PO) Master Validation Checklist")
    assert len(po.items) > 100
    assert core.document("tasks/create-next-story.md") is core.tasks["create-next-story"]
    for step_agent, name in [("pm", "John"), ("ux-expert", "Sally"), ("analyst/pm", "Mary"), ("po", "Sarah")]:
        persona = core.persona(step_agent)
        assert persona is not None
        assert persona.name == name
    assert core.templates["qa-gate-template-v1"].output_format == "yaml"
    fullstack = core.workflows["greenfield-fullstack"]
    assert fullstack.unresolved == []
    assert "sequence[0]: optional_steps are not run (brainstorming_session, market_research_prompt)" in (
        fullstack.unsupported
    )
    # A `uses:` that names a loaded checklist is run by the engine: not listed.
    po_step = next(step for step in fullstack.steps if step.uses == "po-master-checklist")
    assert not any(note.startswith(f"sequence[{po_step.index}]: uses") for note in fullstack.unsupported)


@pytest.fixture
async def bmad_client(tmp_path: Path) -> AsyncIterator[AsyncClient]:
    settings = load_settings(
        {**FAST_ENV, "BOTARMY_DATA_DIR": str(tmp_path / "data"), "BOTARMY_BMAD_DIR": str(shared_path("bmad-samples"))}
    )
    async with app_client(settings, role="viewer") as client:
        yield client


@pytest.fixture
async def v4_client(tmp_path: Path) -> AsyncIterator[AsyncClient]:
    settings = load_settings(
        {
            **FAST_ENV,
            "BOTARMY_DATA_DIR": str(tmp_path / "data"),
            "BOTARMY_BMAD_DIR": str(shared_path("bmad-v4/bmad-core")),
        }
    )
    async with app_client(settings, role="admin") as client:
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
    assert detail["unsupported"] == ["'workflow' is kept, not interpreted"]
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
    assert ours == {"team_id": "team-botarmy", "valid": True, "problems": [], "unsupported": []}
    theirs = (await bmad_client.get("/api/v1/teams/team-fullstack/validate")).json()
    assert theirs["valid"] is False
    assert "workflow 'brownfield-service.yaml' is not loaded" in theirs["problems"]
    assert (await bmad_client.get("/api/v1/teams/team-nobody")).status_code == 404
    assert (await bmad_client.get("/api/v1/bmad/problems")).status_code == 403  # a viewer token


async def test_the_api_reads_the_whole_bmad_v4_core(v4_client: AsyncClient) -> None:
    assert (await v4_client.get("/api/v1/bmad/problems")).json() == {"problems": [], "unsupported": []}
    root = shared_path("bmad-v4/bmad-core")
    workflows = (await v4_client.get("/api/v1/workflows")).json()["items"]
    assert {w["id"] for w in workflows} == {path.stem for path in root.glob("workflows/*.yaml")} | {"botarmy-sdlc"}
    for workflow in workflows:
        detail = await v4_client.get(f"/api/v1/workflows/{workflow['id']}")
        assert detail.status_code == 200
        assert detail.json()["steps"]
        teams = await v4_client.get(f"/api/v1/workflows/{workflow['id']}/teams")
        assert teams.status_code == 200
    brownfield = (await v4_client.get("/api/v1/workflows/brownfield-service")).json()
    assert "'handoff_prompts' is kept, not executed" in brownfield["unsupported"]
    assert not any("brownfield-prd-tmpl" in note for note in brownfield["unsupported"])  # its outline is used
    for team in (await v4_client.get("/api/v1/teams")).json()["items"]:
        check = (await v4_client.get(f"/api/v1/teams/{team['id']}/validate")).json()
        assert check == {"team_id": team["id"], "valid": True, "problems": [], "unsupported": []}
    templates = (await v4_client.get("/api/v1/templates")).json()["items"]
    assert len(templates) == len(list(root.glob("templates/*.yaml"))) + len(list(DEFAULT_CORE_DIR.glob("templates/*")))
    for template in templates:
        assert (await v4_client.get(f"/api/v1/templates/{template['id']}")).status_code == 200
    gate = (await v4_client.get("/api/v1/templates/qa-gate-template-v1")).json()
    assert (gate["output_format"], gate["sections"]) == ("yaml", [])
    assert "{{gate_status}}" not in gate["variables"]  # the body is not rendered
    agents = (await v4_client.get("/api/v1/bmad/agents")).json()["items"]
    assert {(a["id"], a["agent_type"]) for a in agents} >= {("pm", "analyst"), ("ux-expert", "architect")}
    assert all(a["unsupported"] is None for a in agents)
    documents = (await v4_client.get("/api/v1/bmad/documents")).json()["items"]
    assert {"kind": "checklist", "id": "po-master-checklist"}.items() <= next(
        d for d in documents if d["id"] == "po-master-checklist"
    ).items()
    assert len(documents) == len(list(root.glob("tasks/*.md"))) + len(list(root.glob("checklists/*.md"))) + len(
        list(root.glob("data/*.md"))
    )


async def test_unsupported_agent_files_show_in_the_api(tmp_path: Path) -> None:
    write(tmp_path, "bmad/agents/juggler.md", AGENT_FILE.format(id="juggler", name="Jo", title="Juggler"))
    settings = load_settings(
        {**FAST_ENV, "BOTARMY_DATA_DIR": str(tmp_path / "data"), "BOTARMY_BMAD_DIR": str(tmp_path / "bmad")}
    )
    async with app_client(settings, role="admin") as client:
        problems = (await client.get("/api/v1/bmad/problems")).json()
        agents = (await client.get("/api/v1/bmad/agents")).json()["items"]
    assert problems["problems"] == []
    [unsupported] = problems["unsupported"]
    assert unsupported["path"].endswith("juggler.md")
    assert "maps to none of our agents" in unsupported["reason"]
    [juggler] = agents
    assert (juggler["id"], juggler["name"], juggler["agent_type"]) == ("juggler", "Jo", None)
    assert "maps to none of our agents" in juggler["unsupported"]


# -- hostile files -----------------------------------------------------------------------------

ALIAS_BOMB = (
    "workflow:\n  id: bomb\n  a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"  {name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
        for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "  sequence:\n    - agent: analyst\n      creates: x.md\n      notes: *i\n"
)


def hostile_core(root: Path) -> dict[str, str]:
    """A BMAD directory with one hostile file per kind, and the reason each must be reported with."""
    for folder in ("workflows", "templates", "agents", "tasks"):
        (root / folder).mkdir(parents=True)
    (root / "workflows" / "loop.yaml").symlink_to("loop.yaml")
    (root / "workflows" / "bomb.yaml").write_text(ALIAS_BOMB)
    (root / "workflows" / "deep.yaml").write_text("workflow: " + "[" * 5000 + "]" * 5000 + "\n")
    os.mkfifo(root / "templates" / "x.yaml")
    (root / "tasks" / "dangling.md").symlink_to(root / "tasks" / "gone.md")
    locked = root / "agents" / "locked.md"
    locked.write_text("# locked\n")
    locked.chmod(0)
    expected = {
        "workflows/loop.yaml": "a symlink loop",
        "workflows/bomb.yaml": "aliases",
        "workflows/deep.yaml": "nested too deeply",
        "templates/x.yaml": "not a regular file",
        "tasks/dangling.md": "broken link",
    }
    if os.geteuid() != 0:  # root reads any file
        expected["agents/locked.md"] = "permission denied"
    return expected


def test_hostile_files_are_problems_of_their_own(tmp_path: Path) -> None:
    expected = hostile_core(tmp_path / "core")
    unblock = threading.Timer(10, lambda: os.close(os.open(tmp_path / "core/templates/x.yaml", os.O_WRONLY)))
    unblock.start()  # before the fix, reading the FIFO waited for a writer: fail, do not hang
    try:
        core = load_core(tmp_path / "core")
    finally:
        unblock.cancel()
    problems = {str(Path(problem.path).relative_to(tmp_path / "core")): problem.reason for problem in core.problems}
    for path, reason in expected.items():
        assert reason in problems.get(path, ""), (path, problems)
    assert core.workflows == {}


async def test_hostile_files_never_stall_or_break_the_api(tmp_path: Path) -> None:
    """Every BMAD route answers while the first use reads the files, and /health stays fast."""
    expected = hostile_core(tmp_path / "core")
    settings = load_settings(
        {**FAST_ENV, "BOTARMY_DATA_DIR": str(tmp_path / "data"), "BOTARMY_BMAD_DIR": str(tmp_path / "core")}
    )
    unblock = threading.Timer(10, lambda: os.close(os.open(tmp_path / "core/templates/x.yaml", os.O_WRONLY)))
    unblock.start()
    try:
        async with app_client(settings, role="admin") as client:
            slowest = 0.0

            async def health() -> None:
                nonlocal slowest
                for _ in range(20):
                    started = time.perf_counter()
                    assert (await client.get("/health")).status_code == 200
                    slowest = max(slowest, time.perf_counter() - started)
                    await asyncio.sleep(0.01)

            routes = ["/api/v1/workflows", "/api/v1/templates", "/api/v1/bmad/problems", "/api/v1/workflows/bomb"]
            answers, _ = await asyncio.gather(asyncio.gather(*(client.get(route) for route in routes)), health())
            assert [answer.status_code for answer in answers] == [200, 200, 200, 404]
            assert slowest < 1.0
            reported = {
                str(Path(problem["path"]).relative_to(tmp_path / "core")): problem["reason"]
                for problem in answers[2].json()["problems"]
            }
            for path, reason in expected.items():
                assert reason in reported.get(path, ""), (path, reported)
    finally:
        unblock.cancel()


async def test_the_console_reads_a_big_core_off_the_event_loop(tmp_path: Path) -> None:
    """The console's projects page lists the workflows: its first read of a big BMAD directory
    (here ~0.4 MB of YAML, most of a second to parse) leaves /health fast."""
    notes = "".join(f"      - step {n}: a line of notes of a big workflow\n" for n in range(8000))
    (tmp_path / "core" / "workflows").mkdir(parents=True)
    (tmp_path / "core" / "workflows" / "big.yaml").write_text(
        "workflow:\n  id: big\n  name: Big\n  sequence:\n    - agent: analyst\n      creates: x.md\n      notes:\n"
        + notes
    )
    settings = load_settings(
        {**FAST_ENV, "BOTARMY_DATA_DIR": str(tmp_path / "data"), "BOTARMY_BMAD_DIR": str(tmp_path / "core")}
    )
    async with app_client(settings, role="admin") as client:
        page = asyncio.create_task(client.get("/", headers={"Accept": "text/html"}))
        latencies = []
        while not page.done():
            started = time.perf_counter()
            assert (await client.get("/health")).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        answer = await page
        assert answer.status_code == 200
        assert '<option value="big"' in answer.text
        # /health answered all along the load (about 80 times; on the loop, once, after it).
        assert len(latencies) >= 10, latencies
        assert max(latencies) < 0.25, latencies

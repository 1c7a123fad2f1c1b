"""The offline model writes about the user's idea and the documents it was given (pure, no database).

Each writer is called the way a workflow step calls it (the step's boilerplate first line, the idea,
the context artifacts) and its answer is checked against the idea or the given documents, and
against the schema of its type.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import types
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.agents.outputs import AgentAnswer
from app.artifacts.content import CONTENT_TYPES
from app.artifacts.models import ArtifactType
from app.llm.base import ModelRequest
from app.llm.offline import OfflineProvider

TODO = "A todo list for teams: tasks with due dates, assignees and reminders"
RECIPES = "A recipe sharing site where cooks publish recipes, rate dishes and plan weekly meals"
STEP = "Greenfield Full-Stack Application Development, step 2 of 19 (plan phase): create prd.md."
NOTES = "Creates PRD from project brief using prd-tmpl. SAVE OUTPUT: Copy final prd.md to your project's docs/ folder."
BOILERPLATE = {"botarmy", "software", "lifecycle", "step", "greenfield", "full-stack", "save", "output", "prd-tmpl"}


def idea(text: str) -> dict[str, Any]:
    return {"artifact_id": "idea", "artifact_type": "user_input", "title": "Product idea", "content": {"text": text}}


def given(kind: str, content: dict[str, Any], title: str, ident: str | None = None) -> dict[str, Any]:
    return {"artifact_id": ident or f"{kind}-1", "artifact_type": kind, "title": title, "content": content}


async def ask(
    types: list[str],
    context: list[dict[str, Any]],
    *,
    agent: str = "analyst",
    instructions: str | None = None,
    **hints: Any,
) -> list[dict[str, Any]]:
    """The artifacts of one offline answer, each validated against its content schema."""
    text = instructions if instructions is not None else f"{STEP}\n{NOTES}\nProduct idea: {TODO}"
    request = ModelRequest(
        system="persona",
        prompt="prompt",
        output_schema={},
        hints={"agent_type": agent, "artifact_types": types, "instructions": text, "context": context, **hints},
    )
    response = await OfflineProvider().complete(request, model="botarmy-offline-1")
    answer = msgspec.json.decode(response.text, type=AgentAnswer)
    for artifact in answer.artifacts:
        msgspec.convert(artifact.content, CONTENT_TYPES[ArtifactType(artifact.artifact_type)])
    return [
        given(a.artifact_type, a.content, a.title, f"{a.artifact_type}-{i}") for i, a in enumerate(answer.artifacts)
    ]


def words(value: Any) -> set[str]:
    return set(re.findall(r"[a-z][a-z-]+", msgspec.json.encode(value).decode().lower()))


async def test_the_todo_prd_speaks_of_tasks_due_dates_and_teams() -> None:
    [prd] = await ask(["software_specification"], [idea(TODO)])
    assert prd["title"] == "PRD: Todo list for teams"
    features = [feature["name"].lower() for feature in prd["content"]["feature_map"]]
    assert {"tasks", "due dates", "teams", "assignees", "reminders"} <= set(features)
    assert not BOILERPLATE & words(prd["content"]["feature_map"])
    assert not BOILERPLATE & words(prd["content"]["business_requirements"])
    assert "Team member" in [persona["name"] for persona in prd["content"]["personas"]]
    assert "due date" in msgspec.json.encode(prd["content"]["business_requirements"]).decode()
    # The idea in the "Product idea:" line alone (no user_input artifact) gives the same document.
    assert await ask(["software_specification"], []) == [prd]


async def test_another_idea_gives_another_product() -> None:
    instructions = f"{STEP}\n{NOTES}\nProduct idea: {RECIPES}"
    [prd] = await ask(["software_specification"], [idea(RECIPES)], instructions=instructions)
    assert prd["title"] == "PRD: Recipe sharing site"
    text = words(prd["content"])
    assert {"recipes", "dishes", "meals", "cooks"} <= text
    assert not {"tasks", "teams"} & text
    assert "Cook" in [persona["name"] for persona in prd["content"]["personas"]]


@pytest.mark.parametrize("text", ["", "Chess", "!!!"])
async def test_a_tiny_idea_still_gives_valid_documents_of_every_type(text: str) -> None:
    for kind in CONTENT_TYPES:
        if kind == ArtifactType.USER_INPUT or kind not in CONTENT_TYPES:
            continue
        produced = await ask([kind.value], [idea(text)], instructions=f"{STEP}\nProduct idea: {text}")
        assert produced and all(artifact["artifact_type"] == kind.value for artifact in produced)


async def test_a_prd_written_from_a_brief_keeps_the_briefs_features() -> None:
    brief_content = {
        "vision": "Teams plan their work.",
        "personas": [{"name": "Lead", "description": "Runs the team."}],
        "business_requirements": [{"id": "BR-1", "description": "Work offline."}],
        "feature_map": [
            {"name": "Offline mode", "description": "Edit tasks without a network.", "requirement_ids": []}
        ],
        "success_criteria": ["Works on a train."],
    }
    [prd] = await ask(["software_specification"], [idea(TODO), given("software_specification", brief_content, "Brief")])
    features = [feature["name"] for feature in prd["content"]["feature_map"]]
    assert features[0] == "Offline mode"
    assert {"Tasks", "Due dates", "Teams"} <= set(features)
    assert prd["content"]["feature_map"][0]["description"] == "Edit tasks without a network."


async def test_the_brief_step_writes_a_project_brief() -> None:
    step = "Greenfield Full-Stack Application Development, step 1 of 19 (discovery phase): create project-brief.md."
    [brief] = await ask(["software_specification"], [idea(TODO)], instructions=f"{step}\nProduct idea: {TODO}")
    assert brief["title"] == "Project brief: Todo list for teams"


PRD = {
    "vision": "Cooks keep recipes.",
    "personas": [{"name": "Cook", "description": "Cooks daily."}],
    "business_requirements": [{"id": "BR-1", "description": "Recipes."}, {"id": "BR-2", "description": "Lists."}],
    "feature_map": [
        {"name": "Recipes", "description": "Store recipes.", "requirement_ids": ["BR-1"]},
        {"name": "Shopping lists", "description": "Lists from recipes.", "requirement_ids": ["BR-2"]},
    ],
    "success_criteria": ["A recipe in a minute."],
}


async def test_the_architecture_has_a_component_per_prd_feature() -> None:
    [architecture] = await ask(
        ["system_architecture"], [given("software_specification", PRD, "PRD: Recipe box"), idea("Recipe box")]
    )
    content = architecture["content"]
    assert architecture["title"] == "Architecture: Recipe box"
    assert [c["name"] for c in content["components"]] == ["recipes", "shopping_lists", "api", "database"]
    assert [entity["name"] for entity in content["data_model"]] == ["Recipe", "ShoppingList"]
    assert {(e["method"], e["path"]) for e in content["api_spec"]} >= {("GET", "/recipes"), ("POST", "/shopping_lists")}


ARCHITECTURE = {
    "overview": "Invoices for freelancers.",
    "components": [
        {"name": "invoices", "responsibility": "Invoices and their lines", "technology": "Python"},
        {"name": "clients", "responsibility": "Who pays", "technology": "Python"},
        {"name": "api", "responsibility": "HTTP", "technology": "Python"},
    ],
    "api_spec": [],
    "data_model": [{"name": "Invoice", "fields": ["id", "title", "client_id", "amount", "class"]}],
    "risks": [],
}


async def test_the_code_implements_the_architectures_modules() -> None:
    [code] = await ask(
        ["source_code"], [given("system_architecture", ARCHITECTURE, "Architecture: Invoicing")], agent="coder"
    )
    files = {file["path"]: file["content"] for file in code["content"]["files"]}
    tests = {file["path"] for file in code["content"]["tests"]}
    assert set(files) == {"app/__init__.py", "app/invoices.py", "app/clients.py", "app/api.py"}
    assert tests == {"tests/test_invoices.py", "tests/test_clients.py"}
    for path, source in files.items():
        compile(source, path, "exec")
    # The module runs: its dataclass carries the architecture's fields, create and list work.
    module = types.ModuleType("offline_invoices")
    sys.modules[module.__name__] = module
    try:
        exec(compile(files["app/invoices.py"], "invoices.py", "exec"), module.__dict__)  # noqa: S102
        created = module.create_invoice("March")
        assert (created.title, created.client_id, created.amount, created.class_) == ("March", None, None, None)
        assert module.list_invoices() == [created]
    finally:
        del sys.modules[module.__name__]
    assert '("GET", "/clients"): list_clients' in files["app/clients.py"]  # app/api.py collects them


def write_code(root: Path, *codes: dict[str, Any]) -> None:
    for code in codes:
        for file in [*code["content"]["files"], *code["content"]["tests"]]:
            (root / file["path"]).parent.mkdir(parents=True, exist_ok=True)
            (root / file["path"]).write_text(file["content"])


async def test_each_storys_code_is_part_of_one_app_and_a_fix_keeps_to_its_story(tmp_path: Path) -> None:
    """A dev step runs once per story: the code of the stories, put together, is one app whose
    routes are every story's; fixing one after QA keeps its story's modules and answers the review."""
    prd = (await ask(["software_specification"], [idea(TODO)]))[0]
    architecture = (await ask(["system_architecture"], [prd]))[0]
    epics = await ask(["epic"], [prd, architecture])
    stories = [(await ask(["story"], [prd, epic], item=epic["content"]))[0] for epic in epics[:3]]
    codes = [(await ask(["source_code"], [story, architecture], agent="coder"))[0] for story in stories]
    assert [code["title"].split(":")[0] for code in codes] == [
        "Code for story 1.1",
        "Code for story 2.1",
        "Code for story 3.1",
    ]
    write_code(tmp_path, *codes)
    # Run in a process of its own, from the folder of the code (its `app` is not ours).
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from app.api import ROUTES; print(sorted(path for _, path in ROUTES))",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
    )
    routes, _ = await process.communicate()
    assert process.returncode == 0
    assert routes.decode().strip() == str(sorted(["/due_dates", "/tasks", "/teams"] * 2))
    # Several stories in one run: all of them, and it says so.
    [both] = await ask(["source_code"], [stories[0], stories[2], architecture], agent="coder")
    assert both["title"].startswith("Code for stories 1.1, 3.1")
    assert [f["path"] for f in both["content"]["files"]][:2] == ["app/tasks.py", "app/due_dates.py"]

    [qa] = await ask(["review"], [codes[2]], agent="tester", reviews=[codes[2]["artifact_id"]])
    [fixed] = await ask(["source_code"], [codes[2], qa, architecture], agent="coder")
    assert [f["path"] for f in fixed["content"]["files"]] == ["app/due_dates.py", "app/__init__.py", "app/api.py"]
    assert f"Addresses {qa['title']}" in fixed["content"]["notes"]


async def test_epics_come_from_the_prd_and_a_story_from_its_epic() -> None:
    prd = (await ask(["software_specification"], [idea(TODO)]))[0]
    architecture = (await ask(["system_architecture"], [prd]))[0]
    epics = await ask(["epic"], [prd, architecture], agent="analyst")
    assert [e["title"] for e in epics] == [
        "Epic E1: Tasks",
        "Epic E2: Teams",
        "Epic E3: Due dates",
        "Epic E4: Assignees",
        "Epic E5: Reminders",
    ]
    due = epics[2]["content"]
    assert due["requirement_ids"] == ["BR-3"] and due["components"] == ["due_dates"]
    # The story of the run's item (the epic), else of the first epic in the context.
    [story] = await ask(["story"], [prd, *epics], item=due)
    assert story["title"] == "Story 3.1: Set the due date of a task"
    assert (story["content"]["epic_id"], story["content"]["components"]) == ("E3", ["due_dates"])
    assert all("due date" in criterion for criterion in story["content"]["acceptance_criteria"][:2])
    instructions = (
        f"{STEP}\nProduct idea: {TODO}\nThis run is item 3 of 5; do only this one: {msgspec.json.encode(due).decode()}"
    )
    assert await ask(["story"], [prd, *epics], instructions=instructions) == [story]
    [first] = await ask(["story"], [epics[0]])
    assert first["content"]["epic_id"] == "E1" and "tasks" in first["content"]["title"]
    # Stories of this epic already written: the next outline is the one written.
    [second] = await ask(["story"], [epics[2], story])
    assert second["content"]["id"] == "3.2"

    [code] = await ask(["source_code"], [story, architecture, prd], agent="coder")
    assert [file["path"] for file in code["content"]["files"]] == ["app/due_dates.py", "app/__init__.py", "app/api.py"]
    assert "class DueDate" in code["content"]["files"][0]["content"]
    [results] = await ask(["test_results"], [code, story], agent="tester")
    assert [case["steps"] for case in results["content"]["cases"]] == [
        [criterion] for criterion in story["content"]["acceptance_criteria"]
    ]


async def test_epics_stop_at_eight_and_leave_room_for_the_other_artifacts() -> None:
    many = ", ".join(f"widget{n} stats" for n in range(12))
    [prd] = await ask(["software_specification"], [idea(many)])
    assert len(await ask(["epic"], [prd])) == len(prd["content"]["feature_map"])
    big = {**PRD, "feature_map": [{"name": f"Area {n}", "description": "x"} for n in range(12)]}
    assert len(await ask(["epic"], [given("software_specification", big, "PRD")])) == 8
    mixed = await ask(["epic", "story", "review", "project_plan"], [given("software_specification", big, "PRD")])
    assert len(mixed) == 10 and [a["artifact_type"] for a in mixed][-3:] == ["story", "review", "project_plan"]


async def test_review_findings_are_the_checklist_items_in_order() -> None:
    prd = (await ask(["software_specification"], [idea(TODO)]))[0]
    architecture = (await ask(["system_architecture"], [prd]))[0]
    items = ["Every requirement maps to a feature", "Due dates are specified", "Brownfield migration is planned"]
    [review] = await ask(
        ["review"],
        [idea(TODO), prd, architecture],
        checklist="po-master-checklist",
        checklist_items=items,
        reviews=[prd["artifact_id"]],
    )
    content = review["content"]
    assert [finding["item"] for finding in content["findings"]] == items
    assert content["checklist"] == "po-master-checklist"
    assert [finding["status"] for finding in content["findings"]][:2] == ["pass", "pass"]
    assert all(prd["title"] in finding["note"] for finding in content["findings"])
    assert architecture["title"] not in content["summary"]
    # Without a checklist, one finding per reviewed document.
    [plain] = await ask(["review"], [idea(TODO), prd, architecture])
    assert [finding["item"].split(" is ")[0] for finding in plain["content"]["findings"]] == [
        prd["title"],
        architecture["title"],
    ]
    # Each finding is about its own document: the review of three stories names each in its note.
    epics = await ask(["epic"], [prd, architecture])
    stories = [(await ask(["story"], [prd, epic], item=epic["content"]))[0] for epic in epics[:3]]
    [of_stories] = await ask(["review"], [idea(TODO), *stories])
    assert [finding["note"].split(" covers ")[0] for finding in of_stories["content"]["findings"]] == [
        story["title"] for story in stories
    ]


async def test_feedback_shows_in_the_redo() -> None:
    [prd] = await ask(["software_specification"], [idea(TODO)], feedback="Add recurring tasks")
    assert prd["title"] == "PRD: Todo list for teams (revised: Add recurring tasks)"
    assert prd["content"]["business_requirements"][-1]["description"] == "Add recurring tasks"


async def test_the_same_request_gives_the_same_answer() -> None:
    prd = (await ask(["software_specification"], [idea(TODO)]))[0]
    context = [idea(TODO), prd]
    for kind in ("software_specification", "system_architecture", "epic", "story", "source_code", "review"):
        assert await ask([kind], context) == await ask([kind], context)


async def test_direct_tasks_without_a_workflow_take_the_instructions_as_the_idea() -> None:
    [prd] = await ask(["software_specification"], [], instructions="recipe box [[offline:confidence=0.5]]")
    assert prd["title"] == "PRD: Recipe box"
    assert "Primary user" in [persona["name"] for persona in prd["content"]["personas"]]
    # A workflow step with no idea never takes its subject from the step's first line.
    [empty] = await ask(["software_specification"], [], instructions=f"{STEP}\n{NOTES}")
    assert not BOILERPLATE & words(empty["content"]["feature_map"])


async def test_the_written_code_passes_its_own_tests(tmp_path: Path) -> None:
    prd = (await ask(["software_specification"], [idea(RECIPES)], instructions=f"Product idea: {RECIPES}"))[0]
    architecture = (await ask(["system_architecture"], [prd]))[0]
    [code] = await ask(["source_code"], [architecture, prd], agent="coder")
    for file in code["content"]["files"] + code["content"]["tests"]:
        target = tmp_path / file["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(file["content"])
    assert {"app/recipes.py", "app/rate_dishes.py", "app/plan_weekly_meals.py"} <= {
        file["path"] for file in code["content"]["files"]
    }
    ran = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(ran.communicate(), timeout=120))[0].decode()
    assert ran.returncode == 0, output
    assert "6 passed" in output


async def test_a_plural_in_us_of_a_word_in_u_is_not_doubled() -> None:
    [prd] = await ask(["software_specification"], [idea("A meal planner: weekly meal menus and shopping lists")])
    text = msgspec.json.encode(prd["content"]).decode()
    assert "meal menus" in text and "menuses" not in text

"""BMAD v4 templates: loading (real and broken files), rendering to Markdown, and Markdown to safe HTML."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from app.documents.html_page import markdown_to_html
from app.documents.render import missing_variables, render_markdown, validate_values
from app.documents.templates import (
    Template,
    TemplateError,
    iter_sections,
    load_template,
    parse_template,
    template_variables,
)
from tests.conftest import shared_path

UI_CONDITION = "PRD has UX/UI requirements"


@pytest.fixture(scope="module")
def prd() -> Template:
    return load_template(shared_path("bmad-samples/templates/prd-tmpl.yaml"))


def _story(epic: int, number: int, title: str, criteria: list[Any]) -> dict[str, Any]:
    return {
        "story_number": number,
        "story_title": title,
        "user_type": "team member",
        "action": f"feature {epic}.{number}",
        "benefit": "my work is visible",
        "sections": {"acceptance-criteria": criteria},
    }


def _prd_values(*, ui: bool) -> dict[str, Any]:
    return {
        "project_name": "TaskFlow",
        "conditions": {UI_CONDITION: ui},
        "sections": {
            "goals": ["Ship a usable MVP in six weeks", "Cut onboarding to under five minutes"],
            "background": [
                "Small teams lose track of work spread across chat and spreadsheets.",
                "TaskFlow keeps tasks, owners and due dates in one place.",
            ],
            "changelog": [
                ["2024-05-01", "1.0", "Initial draft", "John (PM)"],
                {"Date": "2024-05-08", "Version": "1.1", "Description": "Added NFRs", "Author": "John (PM)"},
            ],
            "functional": [
                "Users can create, edit and delete tasks.",
                "Users can assign a task to one team member.",
                "FR3: Users receive an email when a task is assigned to them.",
            ],
            "non-functional": [
                "API p95 latency stays below 200 ms at 100 requests per second.",
                "All data is encrypted at rest.",
            ],
            "ux-vision": "Calm, keyboard-first, nothing more than two clicks away.",
            "core-screens": ["Login Screen", "Main Dashboard", "Task Detail Page"],
            "service-architecture": "A monolith in a monorepo, deployed as one container.",
            "epic-details": [
                {
                    "epic_number": 1,
                    "epic_title": "Foundation & Core Infrastructure",
                    "epic_goal": "Set up the repository, CI and a health-check route.",
                    "sections": {
                        "story": [
                            _story(1, 1, "Project setup", ["Repository builds in CI", "Linting runs on every push"]),
                            _story(1, 2, "Health check", ["GET /health returns 200", "The response names the version"]),
                        ]
                    },
                },
                {
                    "epic_number": 2,
                    "epic_title": "Task Management",
                    "epic_goal": "Let users create and assign tasks.",
                    "sections": {
                        "story": [
                            _story(2, 1, "Create tasks", ["A task has a title", "An empty title is rejected"]),
                            _story(
                                2,
                                2,
                                "Assign tasks",
                                [
                                    {"criterion_number": "AC1", "criteria": "Only members can be assignees"},
                                    "The assignee is notified",
                                ],
                            ),
                        ]
                    },
                },
            ],
            "ux-expert-prompt": "Review the UI goals and draft the front-end spec.",
        },
    }


def _headings(markdown: str) -> list[tuple[int, str]]:
    found = re.findall(r"^(#{1,6}) (.+)$", markdown, flags=re.MULTILINE)
    return [(len(hashes), text) for hashes, text in found]


def _block_after(markdown: str, heading: str) -> str:
    """The text between a heading line and the next heading."""
    start = markdown.index(heading + "\n") + len(heading) + 1
    following = re.search(r"^#{1,6} ", markdown[start:], flags=re.MULTILINE)
    return markdown[start : start + following.start() if following else len(markdown)].strip()


# ---------------------------------------------------------------------------------------------
# loading


def test_real_prd_template_loads(prd: Template) -> None:
    assert prd.id == "prd-template-v2"
    assert prd.name == "Product Requirements Document"
    assert prd.version == "2.0"  # YAML reads 2.0 as a number; kept as written
    assert (prd.output_format, prd.output_filename) == ("markdown", "docs/prd.md")
    assert prd.output_title == "{{project_name}} Product Requirements Document (PRD)"
    assert prd.unknown["workflow"] == {"mode": "interactive", "elicitation": "advanced-elicitation"}
    assert [s.id for s in prd.sections] == [
        "goals-context",
        "requirements",
        "ui-goals",
        "technical-assumptions",
        "epic-list",
        "epic-details",
        "checklist-results",
        "next-steps",
    ]
    functional = prd.sections[1].sections[0]
    assert (functional.type, functional.prefix, functional.elicit) == ("numbered-list", "FR", False)
    assert functional.examples[0].startswith("FR6:")
    assert prd.sections[0].sections[2].columns == ["Date", "Version", "Description", "Author"]
    ui = prd.sections[2]
    assert ui.condition == UI_CONDITION
    assert ui.elicit is True
    assert ui.extra["choices"]["accessibility"] == ["None", "WCAG AA", "WCAG AAA"]
    epics = prd.sections[5]
    assert epics.repeatable and epics.template == "{{epic_goal}}"
    assert epics.sections[0].sections[0].item_template == "{{criterion_number}}: {{criteria}}"

    assert template_variables(prd) == [
        "project_name",
        "epic_number",
        "epic_title",
        "epic_goal",
        "story_number",
        "story_title",
        "user_type",
        "action",
        "benefit",
        "criterion_number",
        "criteria",
    ]


def test_unknown_keys_are_kept() -> None:
    text = """
template:
  id: story-template-v2
  name: Story Document
  version: 2
  description: kept too
  output: {format: markdown, filename: "docs/stories/{{n}}.md", title: "Story {{n}}", encoding: utf-8}
agent_config:
  editable_sections: [Status, Tasks]
workflow: {mode: interactive}
sections:
  - id: status
    title: Status
    type: choice
    choices: [Draft, Approved]
    owner: scrum-master
    editors: [scrum-master, dev-agent]
  - id: diagram
    title: Diagram
    type: mermaid
    mermaid_type: graph
    examples: a single example, not a list
"""
    template = parse_template(text, "story-tmpl.yaml")
    assert template.version == "2"
    assert template.unknown == {
        "agent_config": {"editable_sections": ["Status", "Tasks"]},
        "workflow": {"mode": "interactive"},
        "template.description": "kept too",
        "template.output.encoding": "utf-8",
    }
    status, diagram = template.sections
    assert status.type == "choice"
    assert status.extra == {
        "choices": ["Draft", "Approved"],
        "owner": "scrum-master",
        "editors": ["scrum-master", "dev-agent"],
    }
    assert diagram.extra == {"mermaid_type": "graph"}
    assert diagram.examples == ["a single example, not a list"]
    # An unknown type renders as paragraphs; mermaid as a fenced block.
    markdown = render_markdown(template, {"n": 3, "sections": {"status": "Draft", "diagram": "graph TD; A-->B"}})
    assert markdown == "# Story 3\n\n## Status\n\nDraft\n\n## Diagram\n\n```mermaid\ngraph TD; A-->B\n```\n"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("template:\n  id: x\n  name: [unclosed\nsections: []\n", r"invalid YAML at line \d+, column \d+"),
        ("template:\n\tid: x\n", "invalid YAML at line 2"),
        ("", "empty document"),
        ("- just\n- a list\n", "expected a mapping at the top level, got a list"),
        ("sections: []\n", "missing 'template:'"),
        ("template: {id: x, name: X}\n", "missing 'sections:'"),
        ("template: {id: x}\nsections: {id: a}\n", "'sections' must be a list, got a mapping"),
        ("template: [x]\nsections: []\n", "'template' must be a mapping"),
        ("template: {name: X}\nsections: []\n", "'template.id' is missing"),
        ("template: {id: x, output: {title: [a]}}\nsections: []\n", "'template.output.title' must be text, got a list"),
        (
            "template: {id: x}\nsections:\n  - id: a\n    sections:\n      - title: Orphan\n",
            r"sections\[0\] \(id 'a'\)\.sections\[0\] \(title 'Orphan'\): section has no 'id'",
        ),
        ("template: {id: x}\nsections:\n  - just text\n", r"sections\[0\]: a section must be a mapping, got text"),
        (
            "template: {id: x}\nsections:\n  - id: a\n    title: [A, B]\n",
            r"'sections\[0\] \(id 'a'\)\.title' must be text",
        ),
        ("template: {id: x}\nsections:\n  - id: a\n    repeatable: often\n", "must be true or false, got text"),
        ("template: {id: x}\nsections:\n  - id: a\n    columns: Date\n", r"\.columns' must be a list, got text"),
        (
            "template: {id: x}\nsections:\n  - id: a\n    sections: b\n",
            r"\(id 'a'\)\.sections' must be a list, got text",
        ),
    ],
)
def test_malformed_templates_raise_template_error_naming_the_file(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "broken-tmpl.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TemplateError) as caught:
        load_template(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert re.search(why, message), message
    assert isinstance(caught.value, ValueError)


def test_unreadable_and_self_referencing_templates(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(TemplateError, match=r"^.*nope\.yaml: cannot read the file"):
        load_template(missing)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"template: \xff\xfe\n")
    with pytest.raises(TemplateError, match="not UTF-8"):
        load_template(binary)
    # A section that contains itself through a YAML anchor must not recurse forever: aliases are refused.
    looping = "template: {id: x}\nsections:\n  - &s\n    id: a\n    sections: [*s]\n"
    with pytest.raises(TemplateError, match=r"YAML aliases \(\*s\) are not accepted"):
        parse_template(looping, "loop.yaml")


def test_yaml_tags_that_build_objects_are_refused() -> None:
    with pytest.raises(TemplateError, match="invalid YAML"):
        parse_template("template: !!python/object/apply:os.system ['true']\nsections: []\n", "evil.yaml")


# ---------------------------------------------------------------------------------------------
# rendering the real PRD template


def test_render_prd_structure_with_ui_section(prd: Template) -> None:
    values = _prd_values(ui=True)
    markdown = render_markdown(prd, values)

    assert markdown.startswith("# TaskFlow Product Requirements Document (PRD)\n\n## Goals and Background Context\n")
    assert markdown.endswith("\n") and not markdown.endswith("\n\n")
    assert _headings(markdown) == [
        (1, "TaskFlow Product Requirements Document (PRD)"),
        (2, "Goals and Background Context"),
        (3, "Goals"),
        (3, "Background Context"),
        (3, "Change Log"),
        (2, "Requirements"),
        (3, "Functional"),
        (3, "Non Functional"),
        (2, "User Interface Design Goals"),
        (3, "Overall UX Vision"),
        (3, "Core Screens and Views"),
        (2, "Technical Assumptions"),
        (3, "Service Architecture"),
        (2, "Epic 1 Foundation & Core Infrastructure"),
        (3, "Story 1.1 Project setup"),
        (4, "Acceptance Criteria"),
        (3, "Story 1.2 Health check"),
        (4, "Acceptance Criteria"),
        (2, "Epic 2 Task Management"),
        (3, "Story 2.1 Create tasks"),
        (4, "Acceptance Criteria"),
        (3, "Story 2.2 Assign tasks"),
        (4, "Acceptance Criteria"),
        (2, "Next Steps"),
        (3, "UX Expert Prompt"),
    ]
    # Sections without content (epic list, checklist, architect prompt, ...) are left out.
    for absent in ("Epic List", "Checklist Results Report", "Architect Prompt", "Branding", "Testing Requirements"):
        assert absent not in markdown

    assert (
        _block_after(markdown, "### Goals")
        == "- Ship a usable MVP in six weeks\n- Cut onboarding to under five minutes"
    )
    assert _block_after(markdown, "### Background Context") == (
        "Small teams lose track of work spread across chat and spreadsheets.\n\n"
        "TaskFlow keeps tasks, owners and due dates in one place."
    )
    assert _block_after(markdown, "### Change Log") == (
        "| Date | Version | Description | Author |\n"
        "| --- | --- | --- | --- |\n"
        "| 2024-05-01 | 1.0 | Initial draft | John (PM) |\n"
        "| 2024-05-08 | 1.1 | Added NFRs | John (PM) |"
    )
    assert _block_after(markdown, "### Functional") == (
        "- FR1: Users can create, edit and delete tasks.\n"
        "- FR2: Users can assign a task to one team member.\n"
        "- FR3: Users receive an email when a task is assigned to them."  # already numbered: not doubled
    )
    assert _block_after(markdown, "### Non Functional") == (
        "- NFR1: API p95 latency stays below 200 ms at 100 requests per second.\n- NFR2: All data is encrypted at rest."
    )
    assert _block_after(markdown, "### Core Screens and Views") == "Login Screen\n\nMain Dashboard\n\nTask Detail Page"
    assert _block_after(markdown, "## Epic 1 Foundation & Core Infrastructure") == (
        "Set up the repository, CI and a health-check route."
    )
    assert _block_after(markdown, "### Story 1.2 Health check") == (
        "As a team member,\nI want feature 1.2,\nso that my work is visible."
    )
    story_2_2 = markdown[markdown.index("### Story 2.2 Assign tasks") : markdown.index("## Next Steps")]
    assert (
        "#### Acceptance Criteria\n\n1. AC1: Only members can be assignees\n2. The assignee is notified\n" in story_2_2
    )
    story_1_1 = markdown[markdown.index("### Story 1.1") : markdown.index("### Story 1.2")]
    assert "1. Repository builds in CI\n2. Linting runs on every push" in story_1_1

    assert "{{" not in markdown
    assert missing_variables(prd, values) == []
    assert validate_values(prd, values) == []


def test_render_prd_without_ui_condition(prd: Template) -> None:
    values = _prd_values(ui=False)
    markdown = render_markdown(prd, values)
    headings = [text for _, text in _headings(markdown)]
    for gone in ("User Interface Design Goals", "Overall UX Vision", "Core Screens and Views"):
        assert gone not in headings
    assert "Calm, keyboard-first" not in markdown
    assert headings.index("Requirements") + 3 == headings.index("Technical Assumptions")

    # Gated by section id as well as by the condition text.
    values["conditions"] = {"ui-goals": True}
    assert "## User Interface Design Goals" in render_markdown(prd, values)
    # No conditions at all: conditional sections are left out.
    del values["conditions"]
    assert "User Interface Design Goals" not in render_markdown(prd, values)
    # Truthy but not true is not enough, and is reported.
    values["conditions"] = {UI_CONDITION: "yes"}
    assert "User Interface Design Goals" not in render_markdown(prd, values)
    assert {"path": f"conditions.{UI_CONDITION}", "message": "expected true or false, got text"} in validate_values(
        prd, values
    )


def test_missing_variables_stay_visible_and_are_reported(prd: Template) -> None:
    values = _prd_values(ui=False)
    del values["project_name"]
    story = values["sections"]["epic-details"][1]["sections"]["story"][0]
    del story["benefit"]
    markdown = render_markdown(prd, values)
    assert markdown.startswith("# {{project_name}} Product Requirements Document (PRD)\n")
    assert "As a team member,\nI want feature 2.1,\nso that {{benefit}}." in markdown
    assert missing_variables(prd, values) == ["project_name", "benefit"]
    problems = validate_values(prd, values)
    assert {
        "path": "template.output.title",
        "message": "missing variable {{project_name}} in the document title",
    } in problems
    assert {
        "path": "sections.epic-details[1].story[0]",
        "message": "missing variable {{benefit}} in the template",
    } in problems
    # A variable of a section that is not rendered is not missing.
    values["project_name"] = "TaskFlow"
    values["sections"]["epic-details"] = []
    assert missing_variables(prd, values) == []


def test_values_are_inserted_as_text_not_expanded(prd: Template) -> None:
    values = _prd_values(ui=False)
    values["project_name"] = "{{epic_title}} <b>x</b>"
    epic = values["sections"]["epic-details"][0]
    epic["epic_goal"] = "Reach {{project_name}} and {{unknown}}"
    values["sections"]["background"] = "Literal {{project_name}} in content."
    markdown = render_markdown(prd, values)
    assert markdown.startswith("# {{epic_title}} <b>x</b> Product Requirements Document (PRD)\n")
    assert "\nReach {{project_name}} and {{unknown}}\n" in markdown
    assert "\nLiteral {{project_name}} in content.\n" in markdown
    assert missing_variables(prd, values) == []


def test_validate_values_reports_shape_problems(prd: Template) -> None:
    values = copy.deepcopy(_prd_values(ui=True))
    sections = values["sections"]
    sections["goals"] = "one goal as text"
    sections["background"] = [["nested"], "fine"]
    sections["changelog"] = [["2024-05-01", "1.0", "Too short"], {"Date": "x", "Owner": "y"}]
    sections["functional"] = {"content": "not a list"}
    sections["goal"] = ["typo in the id"]
    sections["story"] = []
    sections["epic-details"][0]["sections"]["stroy"] = []
    sections["epic-details"][1] = "text is taken as the epic's content"
    problems = validate_values(prd, values)
    assert {
        "path": "sections.goals-context.goals",
        "message": "text where a list is expected (bullet-list)",
    } in problems
    assert {
        "path": "sections.goals-context.background[0]",
        "message": "the item is a list where text is expected",
    } in problems
    assert {
        "path": "sections.goals-context.changelog[0]",
        "message": "row has 3 cells, the table has 4 columns",
    } in problems
    assert {
        "path": "sections.goals-context.changelog[1]",
        "message": "unknown column 'Owner' (columns: Date, Version, Description, Author)",
    } in problems
    assert {
        "path": "sections.requirements.functional",
        "message": "text where a list is expected (numbered-list)",
    } in problems
    assert {"path": "sections.goal", "message": "unknown section id 'goal' at this level"} in problems
    story_problem = next(p for p in problems if p["path"] == "sections.story")
    assert "sections.epic-details.story" in story_problem["message"]
    assert {
        "path": "sections.epic-details[0].stroy",
        "message": "unknown section id 'stroy' at this level",
    } in problems
    # Lenient rendering all the same: nothing crashes and the short row is padded.
    markdown = render_markdown(prd, values)
    assert "| 2024-05-01 | 1.0 | Too short |  |" in markdown
    assert "- one goal as text" in markdown
    assert "## Epic {{epic_number}} {{epic_title}}\n\ntext is taken as the epic's content" in markdown


def test_headings_nest_and_stop_at_level_six() -> None:
    nested: dict[str, Any] = {"id": "s7", "title": "Level 7", "type": "bullet-list"}
    for depth in range(6, 0, -1):
        nested = {"id": f"s{depth}", "title": f"Level {depth}", "sections": [nested]}
    template = parse_template("template: {id: deep, name: Deep Doc}\nsections: " + json.dumps([nested]), "deep.yaml")
    markdown = render_markdown(template, {"sections": {"s7": ["leaf"], "s1": "top text"}})
    assert _headings(markdown) == [
        (1, "Deep Doc"),  # no output title: the template's name
        (2, "Level 1"),
        (3, "Level 2"),
        (4, "Level 3"),
        (5, "Level 4"),
        (6, "Level 5"),
        (6, "Level 6"),
        (6, "Level 7"),
    ]
    assert markdown.endswith("###### Level 7\n\n- leaf\n")
    assert "## Level 1\n\ntop text\n\n### Level 2" in markdown


def test_table_cells_and_multiline_items() -> None:
    template = parse_template(
        """
template: {id: t, name: T, output: {title: Doc}}
sections:
  - id: tbl
    title: Table
    type: table
    columns: [Name, Notes]
  - id: steps
    title: Steps
    type: numbered-list
  - id: free
    title: Free Table
    type: table
""",
        "t.yaml",
    )
    values = {
        "sections": {
            "tbl": [["a|b", "line one\nline two"], [1, None]],
            "steps": ["First\nwith detail", "Second"],
            "free": [{"Key": "k", "Value": 2}],
        }
    }
    markdown = render_markdown(template, values)
    assert "| Name | Notes |\n| --- | --- |\n| a\\|b | line one line two |\n| 1 |  |" in markdown
    assert "1. First\n   with detail\n2. Second" in markdown
    assert "| Key | Value |\n| --- | --- |\n| k | 2 |" in markdown
    html = markdown_to_html(markdown, "Doc")
    assert "<td>a|b</td>" in html
    assert "<ol>" in html and "<li>Second</li>" in html


# ---------------------------------------------------------------------------------------------
# HTML


def test_markdown_to_html_is_standalone_and_safe() -> None:
    markdown = (
        "# Report <img src=x onerror=alert(1)>\n\n"
        "<script>alert('x')</script>\n\n"
        "[plain](javascript:alert(1)) [upper](JaVaScRiPt:alert(2)) [entity](&#106;avascript:alert(3)) "
        "<javascript:alert(4)> ![img](javascript:alert(5)) [vb](vbscript:msgbox(1)) [ok](https://example.com/a?b=1)\n\n"
        "[ref]\n\n[ref]: javascript:alert(6)\n"
    )
    page = markdown_to_html(markdown, 'Q1 <script>alert("t")</script> & more')
    assert page.startswith("<!DOCTYPE html>\n<html")
    assert '<meta charset="utf-8">' in page
    assert "<title>Q1 &lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt; &amp; more</title>" in page
    assert "<style>" in page and "script-src" not in page and "default-src 'none'" in page
    assert "<script" not in page
    assert "<p>&lt;script&gt;alert('x')&lt;/script&gt;</p>" in page
    assert "<img" not in page  # raw HTML is text, and the javascript: image is not an image
    assert "javascript:" not in re.sub(r">[^<]*<", "><", page).lower()  # never inside a tag
    assert "href=" in page and page.count("href=") == 1
    assert '<a href="https://example.com/a?b=1">ok</a>' in page
    assert "<h1>Report &lt;img src=x onerror=alert(1)&gt;</h1>" in page


def test_rendered_prd_converts_to_html(prd: Template) -> None:
    markdown = render_markdown(prd, _prd_values(ui=True))
    page = markdown_to_html(markdown, "TaskFlow PRD")
    assert "<h1>TaskFlow Product Requirements Document (PRD)</h1>" in page
    assert "<th>Date</th>" in page and "<td>Initial draft</td>" in page
    assert "<li>FR1: Users can create, edit and delete tasks.</li>" in page
    assert "<h4>Acceptance Criteria</h4>" in page


def test_other_v4_features_static_text_rows_code_and_repeated_items() -> None:
    """Shapes found in the other BMAD v4 templates (architecture, fullstack-architecture)."""
    template = parse_template(
        """
template:
  id: arch
  name: Architecture
  version: 2.0
  output: {format: markdown, filename: docs/architecture.md, title: "{{project_name}} Architecture"}
sections:
  - id: introduction
    title: 1. Introduction
    content: |
      This document outlines the architecture for {{project_name}}.
  - id: platform
    title: 2. Platform
    template: |
      **Platform:** {{selected_platform}}
  - id: naming
    title: 3. Naming Conventions
    type: table
    columns: [Element, Example]
    rows:
      - ["Components", "`UserProfile.tsx`"]
  - id: environments
    title: 4. Environments
    type: table
    columns: [Environment, URL]
    rows:
      - ["Development", "{{dev_url}}"]
  - id: backend
    title: 5. Backend
    sections:
      - id: serverless
        condition: Serverless architecture chosen
        sections:
          - id: function-template
            title: 5.1. Function Template
            type: code
            language: typescript
            template: "{{function_template}}"
      - id: error-format
        title: 5.2. Error Response Format
        type: code
        language: typescript
        template: |
          interface ApiError { code: string }
  - id: critical-rules
    title: 6. Critical Rules
    repeatable: true
    template: "- **{{rule_name}}:** {{rule_description}}"
  - id: data-models
    title: 7. Data Models
    repeatable: true
    sections:
      - id: model
        title: "{{model_name}}"
        template: "**Purpose:** {{model_purpose}}"
""",
        "arch-tmpl.yaml",
    )
    values: dict[str, Any] = {
        "project_name": "TaskFlow",
        "conditions": {"Serverless architecture chosen": True},
        "sections": {
            "environments": {"dev_url": "http://localhost:3000"},
            "function-template": {"function_template": "export const handler = async () => ok();"},
            "critical-rules": [
                {"rule_name": "Types", "rule_description": "Share them from packages/shared"},
                {"rule_name": "API calls", "rule_description": "Only through the service layer"},
            ],
            "data-models": [
                {"model_name": "User", "model_purpose": "Someone who signs in"},
                {"model_name": "Task", "model_purpose": "Work to do"},
            ],
        },
    }
    markdown = render_markdown(template, values)
    assert markdown == (
        "# TaskFlow Architecture\n\n"
        "## 1. Introduction\n\nThis document outlines the architecture for TaskFlow.\n\n"
        "## 3. Naming Conventions\n\n| Element | Example |\n| --- | --- |\n| Components | `UserProfile.tsx` |\n\n"
        "## 4. Environments\n\n| Environment | URL |\n| --- | --- |\n| Development | http://localhost:3000 |\n\n"
        "## 5. Backend\n\n"
        "### 5.1. Function Template\n\n```typescript\nexport const handler = async () => ok();\n```\n\n"
        "### 5.2. Error Response Format\n\n```typescript\ninterface ApiError { code: string }\n```\n\n"
        "## 6. Critical Rules\n\n"
        "- **Types:** Share them from packages/shared\n- **API calls:** Only through the service layer\n\n"
        "## 7. Data Models\n\n### User\n\n**Purpose:** Someone who signs in\n\n### Task\n\n**Purpose:** Work to do\n"
    )
    # "2. Platform" waits for {{selected_platform}}: left out, and not reported as missing.
    assert missing_variables(template, values) == []
    assert validate_values(template, values) == []
    # Given a section object without the variable, the template shows with the gap visible.
    values["sections"]["platform"] = {}
    assert "## 2. Platform\n\n**Platform:** {{selected_platform}}\n" in render_markdown(template, values)
    assert missing_variables(template, values) == ["selected_platform"]
    assert template_variables(template)[:4] == ["project_name", "selected_platform", "dev_url", "function_template"]


def test_dotted_path_keys_name_nested_sections(prd: Template) -> None:
    values = _prd_values(ui=False)
    expected = render_markdown(prd, values)
    values["sections"]["requirements.functional"] = values["sections"].pop("functional")
    assert render_markdown(prd, values) == expected
    assert validate_values(prd, values) == []


@pytest.mark.parametrize("odd", [None, 0, 2.5, True, "", "text", [], [None], [[]], [{}], {}, {"content": {}}, [1, [2]]])
def test_any_shape_of_values_renders_without_raising(prd: Template, odd: Any) -> None:
    ids = [section.id for section in iter_sections(prd.sections)]
    values: dict[str, Any] = {"project_name": odd, "conditions": {UI_CONDITION: True}}
    values["sections"] = dict.fromkeys(ids, odd)
    markdown = render_markdown(prd, values)
    assert markdown.startswith("# ") and markdown.endswith("\n")
    assert isinstance(missing_variables(prd, values), list)
    assert all(set(problem) == {"path", "message"} for problem in validate_values(prd, values))
    assert render_markdown(prd, {"sections": odd, "conditions": odd}).startswith("# ")


def test_numbered_items_that_carry_their_number_are_not_numbered_twice() -> None:
    template = parse_template(
        "template: {id: s}\nsections:\n  - id: acceptance-criteria\n    title: Acceptance Criteria\n"
        "    type: numbered-list\n    item_template: '{{criterion_number}}: {{criteria}}'\n",
        "story.yaml",
    )
    criteria = [
        {"criterion_number": 1, "criteria": "A task has a due date"},
        {"criterion_number": "2", "criteria": "Overdue tasks are red"},
        {"criterion_number": "AC3", "criteria": "Kept as written"},
        "4) Given by hand",
        "3.5 GB is the upload limit",
    ]
    markdown = render_markdown(template, {"sections": {"acceptance-criteria": criteria}})
    assert markdown == (
        "# s\n\n## Acceptance Criteria\n\n1. A task has a due date\n2. Overdue tasks are red\n3. AC3: Kept as written\n"
        "4. Given by hand\n5. 3.5 GB is the upload limit\n"
    )

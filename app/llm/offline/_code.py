"""The writers of what is built and checked: code, test results, deployment, reviews and the
orchestrator's output."""

from __future__ import annotations

import keyword
from typing import Any

from app.llm.offline._job import (
    _BASE_FIELDS,
    _WORDS,
    INFRASTRUCTURE,
    Job,
    Produced,
    _article,
    _encoder,
    _join,
    _planned,
)
from app.llm.offline._plans import _components
from app.llm.offline._product import (
    FeatureIdea,
    class_name,
    feature_from_name,
    slug,
)

_API = '''"""HTTP routes of {product}: every module of app/ brings its own ROUTES."""

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import app

ROUTES: dict[tuple[str, str], Callable[..., Any]] = {{}}
for _module in pkgutil.iter_modules(app.__path__):
    if _module.name != "api":
        ROUTES.update(getattr(importlib.import_module(f"app.{{_module.name}}"), "ROUTES", {{}}))
'''

# -- coder, tester, deployer -----------------------------------------------------------------


def _identifier(name: str) -> str:
    cleaned = slug(name)
    return cleaned + "_" if keyword.iskeyword(cleaned) else cleaned


def _docstring(text: str) -> str:
    return " ".join(text.replace("\\", "/").replace('"', "'").split())[:200] or "A module."


def _module(name: str, idea: FeatureIdea, about: str, fields: list[str]) -> tuple[str, str]:
    """A module `name` with a dataclass for the feature's entity and its list and create functions."""
    cls = class_name(idea.entity)
    single = _identifier(idea.entity)
    many = _identifier(idea.things)
    store = f"_{many.upper()}"
    extra = [_identifier(f) for f in fields if _identifier(f) not in _BASE_FIELDS]
    lines = [
        f'"""{_docstring(about)}"""',
        "",
        "from __future__ import annotations",
        "",
        "from dataclasses import dataclass, field",
        "from datetime import UTC, datetime",
        "",
        "",
        "@dataclass",
        f"class {cls}:",
        "    id: int",
        "    title: str",
        *(
            f"    {extra_field}: {'int' if extra_field.endswith('_id') else 'str'} | None = None"
            for extra_field in dict.fromkeys(extra)
        ),
        "    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))",
        "",
        "",
        f"{store}: dict[int, {cls}] = {{}}",
        "",
        "",
        f"def list_{many}() -> list[{cls}]:",
        f"    return sorted({store}.values(), key=lambda item: item.id)",
        "",
        "",
        f"def create_{single}(title: str) -> {cls}:",
        "    if not title.strip():",
        f'        raise ValueError("{_article(idea.entity)} needs a title")',
        f"    item = {cls}(id=len({store}) + 1, title=title.strip())",
        f"    {store}[item.id] = item",
        "    return item",
        "",
        "",
        "# Collected by app/api.py.",
        f'ROUTES = {{("GET", "/{name}"): list_{many}, ("POST", "/{name}"): create_{single}}}',
        "",
    ]
    test = (
        f"import pytest\n\nfrom app.{name} import create_{single}, list_{many}\n\n\n"
        f"def test_a_created_{single}_is_listed() -> None:\n"
        f'    item = create_{single}("First {idea.entity}")\n'
        f"    assert item in list_{many}()\n\n\n"
        f"def test_{single}_needs_a_title() -> None:\n"
        f"    with pytest.raises(ValueError):\n"
        f'        create_{single}(" ")\n'
    )
    return "\n".join(lines), test


def _scope(job: Job) -> tuple[list[str], str | None]:
    """The components the code is for, and the stories it implements: the stories given (each
    run of a dev step that repeats gets one), else the modules of the code it fixes; none: all."""
    stories = [item["content"] for item in job.items("story") if isinstance(item.get("content"), dict)]
    if stories:
        wanted = [str(name) for given in stories for name in given.get("components") or []]
        ids = [str(given.get("id")) for given in stories]
        label = f"story {ids[0]}" if len(ids) == 1 else f"stories {', '.join(ids)}"
        return list(dict.fromkeys(wanted)), label
    fixed = job.content("source_code")
    if fixed:
        paths = [str(file.get("path") or "") for file in fixed.get("files") or [] if isinstance(file, dict)]
        modules = [path.removeprefix("app/").removesuffix(".py") for path in paths if path.startswith("app/")]
        return [module for module in modules if module not in ("__init__", "api")], None
    return [], None


def source_code(job: Job) -> Produced:
    components = _components(job)
    wanted, stories = _scope(job)
    if wanted:
        known = {str(c["name"]): c for c in components}
        titles = {
            str(name): str(item["content"].get("title") or name)
            for item in job.items("story")
            if isinstance(item.get("content"), dict)
            for name in item["content"].get("components") or []
        }
        components = [known.get(name) or {"name": name, "responsibility": titles.get(name, name)} for name in wanted]
    architecture_given = job.content("system_architecture") or {}
    data_model = {
        str(entity.get("name")): [str(f) for f in entity.get("fields") or []]
        for entity in architecture_given.get("data_model") or []
        if isinstance(entity, dict)
    }
    files: list[dict[str, str]] = []
    tests: list[dict[str, str]] = []
    names: list[str] = []
    for component in components[:100]:
        raw = str(component["name"])
        if raw in INFRASTRUCTURE:
            continue
        idea = feature_from_name(raw.replace("_", " "))
        name = _identifier(raw)
        about = str(component.get("responsibility") or idea.name)
        code, test = _module(name, idea, about, data_model.get(class_name(idea.entity), []))
        files.append({"path": f"app/{name}.py", "language": "python", "content": code})
        tests.append({"path": f"tests/test_{name}.py", "language": "python", "content": test})
        names.append(name)
    if not names:
        feature = job.product.features[0]
        code, test = _module(feature.module, feature, feature.name, [])
        files.append({"path": f"app/{feature.module}.py", "language": "python", "content": code})
        tests.append({"path": f"tests/test_{feature.module}.py", "language": "python", "content": test})
        names.append(feature.module)
    # The same two files in every story's code: the code of all the stories together is one app.
    files.append(
        {"path": "app/__init__.py", "language": "python", "content": f'"""{_docstring(job.product.name)}."""\n'}
    )
    files.append(
        {"path": "app/api.py", "language": "python", "content": _API.format(product=_docstring(job.product.name))}
    )
    reviewed = [item for item in job.items("review") if isinstance(item.get("content"), dict)]
    addressed = ""
    if reviewed:
        open_items = [
            str(finding.get("item"))
            for finding in reviewed[0]["content"].get("findings") or []
            if isinstance(finding, dict) and finding.get("status") != "pass"
        ]
        addressed = f" Addresses {reviewed[0].get('title')}" + (
            f": {len(open_items)} open items, first {open_items[0][:120]!r}." if open_items else "."
        )
    content = {
        "files": files[:200],
        "tests": tests[:200],
        "dependencies": ["pytest"],
        "notes": f"Implements {stories or job.product.name} with the modules {', '.join(names)}."
        + addressed
        + (f" {job.feedback}" if job.feedback else ""),
    }
    return [(job.title(f"Code for {stories}" if stories else "Code"), content)]


def test_results(job: Job) -> Produced:
    given_story = job.content("story")
    cases: list[dict[str, Any]] = []
    if given_story:
        for index, criterion in enumerate(given_story.get("acceptance_criteria") or [], start=1):
            cases.append(
                {
                    "id": f"TC-{index}",
                    "title": f"Story {given_story.get('id')} AC{index}",
                    "steps": [str(criterion)],
                    "expected": str(criterion),
                    "status": "passed",
                }
            )
    if not cases:
        for index, planned in enumerate(_planned(job), start=1):
            idea = planned.idea
            cases.append(
                {
                    "id": f"TC-{index}",
                    "title": f"{idea.name} works"[:300],
                    "steps": [f"POST /{idea.module} with a title", f"GET /{idea.module}"],
                    "expected": f"The new {idea.entity} is listed.",
                    "status": "passed",
                }
            )
    content = {
        "test_plan": f"Exercise every feature of {job.product.name} through its API.",
        "cases": cases[:500],
        "defects": [],
        "summary": f"All {len(cases)} planned cases passed." + (f" {job.feedback}" if job.feedback else ""),
    }
    return [(job.title("Test results"), content)]


def deployment_package(job: Job) -> Produced:
    service = slug(job.product.name).replace("_", "-")
    content = {
        "container_files": [
            {
                "path": "Containerfile",
                "language": "dockerfile",
                "content": 'FROM python:3.12-slim\nCOPY . /app\nUSER 10001\nCMD ["python", "-m", "app"]\n',
            }
        ],
        "run_files": [
            {"path": "compose.yaml", "language": "yaml", "content": f"services:\n  {service}:\n    build: .\n"}
        ],
        "environment": [{"name": "DATABASE_URL", "description": f"Database of {job.product.name}.", "required": True}],
        "health_checks": ["GET /health answers 200"],
        "rollback_steps": ["Redeploy the previous image tag", "Run the down migration if the schema changed"],
    }
    return [(job.title("Deployment package"), content)]


def deployment_log(job: Job) -> Produced:
    content = {
        "steps": [f"Build the image of {job.product.name}", "Run migrations", "Start the service"],
        "outcome": "planned",
        "notes": job.feedback,
    }
    return [(job.title("Deployment log"), content)]


# -- reviewers and the orchestrator ----------------------------------------------------------


def _words(text: str) -> set[str]:
    return set(_WORDS.findall(text.lower()))


def review(job: Job) -> Produced:
    wanted = {str(ident) for ident in job.hints.get("reviews") or []}
    documents = [
        item
        for item in job.context
        if (str(item.get("artifact_id")) in wanted if wanted else item.get("artifact_type") != "user_input")
    ]
    titles = [str(item.get("title") or item.get("artifact_type")) for item in documents]
    texts = [_words(f"{item.get('title', '')} {_encoder.encode(item.get('content')).decode()}") for item in documents]
    items = [str(item) for item in job.hints.get("checklist_items") or [] if str(item).strip()]
    # Without a checklist, one item per document, checked against that document only.
    own = not items
    if own:
        items = [f"{title} is complete and about {job.product.name}" for title in titles] or [
            f"The documents of {job.product.name} are present"
        ]
    findings = []
    for position, item in enumerate(items[:500]):
        asked = _words(item)
        overlaps = [sorted(asked & text) if not own or index == position else [] for index, text in enumerate(texts)]
        best = max(range(len(overlaps)), key=lambda index: len(overlaps[index]), default=None)
        if best is not None and overlaps[best]:
            status, note = "pass", f"{titles[best]} covers {', '.join(overlaps[best][:4])}."
        elif documents:
            named = titles[position : position + 1] if own else titles[:3]
            status, note = "partial", f"Not addressed explicitly in {', '.join(named)}; to confirm."
        else:
            status, note = "not_applicable", "No document was given to check."
        findings.append({"item": item, "status": status, "note": note})
    passed = sum(1 for finding in findings if finding["status"] == "pass")
    checklist = job.hints.get("checklist")
    content = {
        "verdict": "approved",
        "summary": f"{len(findings)} items checked on {_join(titles[:5]) or 'no document'}: {passed} pass."
        + (f" {job.feedback}" if job.feedback else ""),
        "findings": findings,
        "checklist": str(checklist)[:300] if checklist else None,
    }
    return [(job.title(f"Review ({checklist})" if checklist else "Review"), content)]


def agent_output(job: Job) -> Produced:
    names = [feature.name.lower() for feature in job.product.features]
    content = {
        "summary": f"Plan for {job.product.name}.",
        "plan": [
            f"analyst: requirements for {_join(names)}",
            "architect: one component per feature",
            "coder: one module per component",
            "tester: one case per acceptance criterion",
            "deployer: launch",
        ],
        "routed_to": ["analyst"],
        "answer": f"The team will work on {job.product.name}, starting with {names[0]}."
        + (f" {job.feedback}" if job.feedback else ""),
    }
    return [(job.title("Plan"), content)]

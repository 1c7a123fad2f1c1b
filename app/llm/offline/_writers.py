"""One writer per artifact type: each reads the idea and the documents it was given.

A PRD keeps the features of the brief it was written from; the architecture has one component per
PRD feature; the implementation plan one task per component; the code one module per component (or
per component of the story it implements); epics come from the PRD's features, a story from its
epic, test cases from the story's acceptance criteria, and a review's findings are its checklist.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from app.llm.offline._product import (
    FeatureIdea,
    Product,
    class_name,
    feature_from_name,
    persona_names,
    sentence,
    slug,
)

MAX_ARTIFACTS = 10
MAX_EPICS = 8
INFRASTRUCTURE = {"api": ("HTTP API and validation", "Python"), "database": ("persistent state", "PostgreSQL")}
_EVERY = re.compile(r"^Every ([a-z][a-z ]*?) has ")
_WORDS = re.compile(r"[a-z]{4,}")
_BASE_FIELDS = ("id", "title", "created_at")
_encoder = msgspec.json.Encoder()

Produced = list[tuple[str, dict[str, Any]]]


@dataclass
class Job:
    """What one call is about: the product, the documents given, and the call's hints."""

    product: Product
    context: list[dict[str, Any]]
    hints: dict[str, Any]
    feedback: str = ""
    brief: bool = False
    budget: int = MAX_ARTIFACTS
    revised: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.revised = f" (revised: {self.feedback[:80]})" if self.feedback else ""

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.context if item.get("artifact_type") == kind]

    def content(self, kind: str) -> dict[str, Any] | None:
        for item in self.items(kind):
            if isinstance(item.get("content"), dict):
                return dict(item["content"])
        return None

    def title(self, label: str) -> str:
        return f"{label}: {self.product.name}{self.revised}"[:300]


@dataclass
class Planned:
    """A feature as the documents carry it: its idea, description and requirement ids."""

    idea: FeatureIdea
    description: str
    requirement_ids: list[str]


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1] if words else ""


def _describe(product: Product, feature: FeatureIdea) -> str:
    if feature.parent:
        has = f"Every {feature.parent} has {_article(feature.entity)}"
        return f"{has}: set it, change it and see it on the {feature.parent}."
    if feature.verbs:
        return f"{sentence(product.audience)} {_join(feature.verbs)} {feature.things}."
    if feature.entity in ("team", "family", "group", "club", "household", "company", "organization"):
        return f"Create {feature.things}, invite members and share the work within each {feature.entity}."
    return f"Create, list, update and remove {feature.things}."


def _planned(job: Job) -> list[Planned]:
    """The features of the PRD (or brief) given, else those of the idea."""
    spec = job.content("software_specification")
    found: list[Planned] = []
    if spec is not None:
        for entry in spec.get("feature_map") or []:
            if not isinstance(entry, dict) or not entry.get("name"):
                continue
            description = str(entry.get("description") or "")
            idea = feature_from_name(str(entry["name"]))
            parent = _EVERY.match(description)
            idea.parent = parent.group(1) if parent else None
            ids = [str(ident) for ident in entry.get("requirement_ids") or []]
            if all(known.idea.module != idea.module for known in found):
                found.append(Planned(idea, description, ids))
    if found:
        return found
    return [
        Planned(feature, _describe(job.product, feature), [f"BR-{index}"])
        for index, feature in enumerate(job.product.features, start=1)
    ]


# -- analyst ---------------------------------------------------------------------------------


def specification(job: Job) -> Produced:
    product = job.product
    features = (
        [(planned.idea, planned.description) for planned in _planned(job)]
        if job.content("software_specification")
        else []
    )
    for feature in product.features:
        if all(known.module != feature.module for known, _ in features):
            features.append((feature, _describe(product, feature)))
    features = features[:20]
    requirements = [
        {
            "id": f"BR-{index}",
            "description": f"{feature.name}: {description}",
            "priority": "must" if index <= 3 else "should" if index <= 6 else "could",
        }
        for index, (feature, description) in enumerate(features, start=1)
    ]
    if job.feedback:
        requirements.append({"id": f"BR-{len(requirements) + 1}", "description": job.feedback, "priority": "must"})
    names = [feature.name for feature, _ in features]
    people = persona_names(product) or ["Primary user"]
    content = {
        "vision": f"{product.name} lets {product.audience} work with {_join([n.lower() for n in names])}. "
        f"The idea: {product.idea or product.name}" + (f" (revised: {job.feedback})" if job.feedback else ""),
        "personas": [
            {
                "name": person,
                "description": f"Uses {product.name} every day for {_join([n.lower() for n in names[:3]])}.",
                "needs": names[:3],
            }
            for person in people
        ]
        + [{"name": "Administrator", "description": f"Keeps {product.name} healthy.", "needs": ["monitoring"]}],
        "business_requirements": requirements,
        "feature_map": [
            {"name": feature.name, "description": description, "requirement_ids": [f"BR-{index}"]}
            for index, (feature, description) in enumerate(features, start=1)
        ],
        "success_criteria": [
            f"A {people[0].lower()} finds and updates {feature.things} in {product.name} in under a minute."
            for feature, _ in features[:3]
        ],
        "open_questions": [],
    }
    return [(job.title("Project brief" if job.brief else "PRD"), content)]


def project_plan(job: Job) -> Produced:
    names = [planned.idea.name for planned in _planned(job)]
    content = {
        "goals": [f"Ship a first version of {job.product.name}: {_join([n.lower() for n in names])}."],
        "milestones": [
            {
                "name": "Discovery",
                "description": f"Confirm the needs of {job.product.audience}.",
                "deliverables": ["PRD"],
            },
            {"name": "Design", "description": f"Architecture of {job.product.name}.", "deliverables": ["Architecture"]},
            {"name": "Build", "description": "One module per feature.", "deliverables": names[:10]},
            {"name": "Launch", "description": f"{job.product.name} in production.", "deliverables": ["Deployment"]},
        ],
        "risks": [f"The scope of {names[0].lower()} grows during the build."]
        + ([job.feedback] if job.feedback else []),
    }
    return [(job.title("Project plan"), content)]


# -- architect -------------------------------------------------------------------------------


def _fields(idea: FeatureIdea, children: list[FeatureIdea]) -> list[str]:
    extra = [f"{slug(idea.parent)}_id"] if idea.parent else []
    return ["id", "title", *extra, *(slug(child.entity) for child in children), "created_at"]


def architecture(job: Job) -> Produced:
    planned = _planned(job)
    ideas = [item.idea for item in planned]
    modules = [idea.module for idea in ideas]
    components = [
        {"name": idea.module, "responsibility": f"{idea.name}: {item.description}", "technology": "Python module"}
        for idea, item in zip(ideas, planned, strict=True)
    ] + [
        {"name": name, "responsibility": what, "technology": tech}
        for name, (what, tech) in INFRASTRUCTURE.items()
        if name not in modules
    ]
    endpoints = []
    for idea in ideas:
        endpoints.append({"method": "GET", "path": f"/{idea.module}", "description": f"List {idea.things}."})
        endpoints.append(
            {"method": "POST", "path": f"/{idea.module}", "description": f"Create {_article(idea.entity)}."}
        )
    content = {
        "overview": f"{job.product.name} is a Python web API over PostgreSQL with one module per feature of the PRD "
        f"({', '.join(modules)}); the api component routes each request to its module."
        + (f" Revised: {job.feedback}" if job.feedback else ""),
        "components": components,
        "api_spec": endpoints[:200],
        "data_model": [
            {"name": class_name(idea.entity), "fields": _fields(idea, [c for c in ideas if c.parent == idea.entity])}
            for idea in ideas
        ],
        "risks": [
            {
                "description": f"Load on {ideas[0].things} above expectations",
                "severity": "medium",
                "mitigation": f"Index the {ideas[0].module} table and scale out the api.",
            }
        ],
    }
    return [(job.title("Architecture"), content)]


def _components(job: Job) -> list[dict[str, Any]]:
    """The architecture's components, else one per feature plus the infrastructure."""
    given = job.content("system_architecture")
    listed = [c for c in (given or {}).get("components") or [] if isinstance(c, dict) and c.get("name")]
    if listed:
        return listed
    content = architecture(job)[0][1]
    components: list[dict[str, Any]] = content["components"]
    return components


def implementation_plan(job: Job) -> Produced:
    components = _components(job)
    tasks = [
        {
            "id": "T-1",
            "title": "Project skeleton",
            "description": f"Set up {job.product.name}: repository, settings, api and database.",
            "estimate_hours": 2.0,
        }
    ]
    for index, component in enumerate(components, start=2):
        name = str(component["name"])
        tasks.append(
            {
                "id": f"T-{index}",
                "title": f"Build the {name} component"[:300],
                "description": f"{str(component.get('responsibility') or name).rstrip('.')}. Model, module and tests.",
                "depends_on": ["T-1"],
                "estimate_hours": 4.0,
            }
        )
    if job.feedback:
        tasks.append({"id": f"T-{len(tasks) + 1}", "title": "Feedback", "description": job.feedback})
    return [(job.title("Implementation plan"), {"tasks": tasks[:300]})]


# -- product owner and scrum master ----------------------------------------------------------


def _outlines(number: int, idea: FeatureIdea) -> list[dict[str, str]]:
    if idea.parent:
        titles = [f"Set the {idea.entity} of {_article(idea.parent)}", f"See the {idea.entity} on each {idea.parent}"]
    elif idea.verbs:
        titles = [f"{sentence(verb)} {idea.things}" for verb in idea.verbs[:3]] + [f"List and find {idea.things}"]
    else:
        titles = [f"Create {idea.things}", f"List and find {idea.things}"]
    return [
        {"id": f"{number}.{index}", "title": title, "description": f"{title} in the {idea.module} module."}
        for index, title in enumerate(titles, start=1)
    ]


def epics(job: Job) -> Produced:
    architecture_names = {str(c["name"]) for c in _components(job)} if job.items("system_architecture") else set()
    produced: Produced = []
    for number, planned in enumerate(_planned(job)[: min(MAX_EPICS, job.budget)], start=1):
        idea = planned.idea
        content = {
            "id": f"E{number}",
            "title": idea.name,
            "goal": planned.description or f"{idea.name} in {job.product.name}.",
            "requirement_ids": planned.requirement_ids,
            "components": [idea.module] if not architecture_names or idea.module in architecture_names else ["api"],
            "stories": _outlines(number, idea),
        }
        produced.append((f"Epic E{number}: {idea.name}{job.revised}"[:300], content))
    return produced


def _item(job: Job) -> Any:
    item = job.hints.get("item")
    if item is not None:
        return item
    marker = "do only this one: "
    instructions = str(job.hints.get("instructions", ""))
    if marker in instructions:
        try:
            return msgspec.json.decode(instructions.rsplit(marker, 1)[1].strip())
        except msgspec.DecodeError:
            return None
    return None


def _epic_and_outline(job: Job) -> tuple[dict[str, Any], dict[str, Any]]:
    item = _item(job)
    written = {str((story.get("content") or {}).get("id")) for story in job.items("story")}
    given = [e["content"] for e in job.items("epic") if isinstance(e.get("content"), dict)]
    epic: dict[str, Any] | None = None
    outline: dict[str, Any] | None = None
    if isinstance(item, dict) and ("stories" in item or "goal" in item):
        epic = item
    elif isinstance(item, dict) and item.get("title"):
        outline = item
        epic = next((e for e in given if any(s.get("id") == item.get("id") for s in e.get("stories") or [])), None)
    if epic is None:
        epic = given[0] if given else epics(job)[0][1]
    stories = [s for s in epic.get("stories") or [] if isinstance(s, dict) and s.get("title")]
    if outline is None:
        outline = next((s for s in stories if str(s.get("id")) not in written), stories[0] if stories else None)
    if outline is None:
        title = str(epic.get("title") or job.product.features[0].name)
        outline = {"id": f"{str(epic.get('id', 'E1')).lstrip('E')}.1", "title": title, "description": title}
    return epic, outline


def story(job: Job) -> Produced:
    epic, outline = _epic_and_outline(job)
    idea = feature_from_name(str(epic.get("title") or outline["title"]))
    person = (persona_names(job.product) or ["user"])[0].lower()
    title = str(outline["title"])
    module = idea.module
    components = [str(c) for c in epic.get("components") or []][:50] or [module]
    content = {
        "id": str(outline.get("id") or "1.1"),
        "epic_id": str(epic.get("id") or "E1"),
        "title": title[:300],
        "as_a": person,
        "i_want": f"to {title[:1].lower()}{title[1:]}",
        "so_that": str(epic.get("goal") or f"{job.product.name} does what I need"),
        "acceptance_criteria": [
            f"Given {_article(person)}, when they {title.lower()}, then the {idea.entity} is saved and listed.",
            f"{sentence(_article(idea.entity))} without a title is refused with a clear message.",
            f"GET /{module} lists the {idea.things} newest last.",
        ]
        + ([job.feedback] if job.feedback else []),
        "tasks": [
            f"Add the {class_name(idea.entity)} model to app/{module}.py",
            f"Expose GET and POST /{module} in app/api.py",
            f"Write tests/test_{module}.py for: {title}",
        ],
        "components": components,
        "status": "draft",
    }
    return [(f"Story {content['id']}: {title}{job.revised}"[:300], content)]


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


def source_code(job: Job) -> Produced:
    given_story = job.content("story")
    components = _components(job)
    if given_story and given_story.get("components"):
        wanted = {str(name) for name in given_story["components"]}
        chosen = [c for c in components if str(c["name"]) in wanted]
        known = {str(c["name"]) for c in chosen}
        chosen += [{"name": name, "responsibility": given_story.get("title", name)} for name in wanted - known]
        components = sorted(chosen, key=lambda c: str(c["name"]))
    architecture_given = job.content("system_architecture") or {}
    data_model = {
        str(entity.get("name")): [str(f) for f in entity.get("fields") or []]
        for entity in architecture_given.get("data_model") or []
        if isinstance(entity, dict)
    }
    files: list[dict[str, str]] = []
    tests: list[dict[str, str]] = []
    routed: list[tuple[str, FeatureIdea]] = []
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
        routed.append((name, idea))
    if not routed:
        feature = job.product.features[0]
        code, test = _module(feature.module, feature, feature.name, [])
        files.append({"path": f"app/{feature.module}.py", "language": "python", "content": code})
        tests.append({"path": f"tests/test_{feature.module}.py", "language": "python", "content": test})
        routed.append((feature.module, feature))
    names = [name for name, _ in routed]
    routes = "".join(
        f'    ("GET", "/{name}"): {name}.list_{_identifier(idea.things)},\n'
        f'    ("POST", "/{name}"): {name}.create_{_identifier(idea.entity)},\n'
        for name, idea in routed
    )
    files.append(
        {"path": "app/__init__.py", "language": "python", "content": f'"""{_docstring(job.product.name)}."""\n'}
    )
    files.append(
        {
            "path": "app/api.py",
            "language": "python",
            "content": f'"""HTTP routes of {job.product.name}: each path goes to its module."""\n\n'
            f"from collections.abc import Callable\nfrom typing import Any\n\nfrom app import {', '.join(names)}\n\n"
            f"ROUTES: dict[tuple[str, str], Callable[..., Any]] = {{\n{routes}}}\n",
        }
    )
    subject = f"story {given_story.get('id')}: {given_story.get('title')}" if given_story else job.product.name
    content = {
        "files": files[:200],
        "tests": tests[:200],
        "dependencies": ["pytest"],
        "notes": f"Implements {subject} with the modules {', '.join(names)}."
        + (f" {job.feedback}" if job.feedback else ""),
    }
    label = f"Code for story {given_story.get('id')}" if given_story else "Code"
    return [(job.title(label), content)]


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
    if not items:
        items = [f"{title} is complete and about {job.product.name}" for title in titles] or [
            f"The documents of {job.product.name} are present"
        ]
    findings = []
    for item in items[:500]:
        asked = _words(item)
        overlaps = [sorted(asked & text) for text in texts]
        best = max(range(len(overlaps)), key=lambda index: len(overlaps[index]), default=None)
        if best is not None and overlaps[best]:
            status, note = "pass", f"{titles[best]} covers {', '.join(overlaps[best][:4])}."
        elif documents:
            status, note = "partial", f"Not addressed explicitly in {', '.join(titles[:3])}; to confirm."
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


WRITERS: dict[str, Callable[[Job], Produced]] = {
    "software_specification": specification,
    "project_plan": project_plan,
    "system_architecture": architecture,
    "implementation_plan": implementation_plan,
    "source_code": source_code,
    "test_results": test_results,
    "deployment_package": deployment_package,
    "deployment_log": deployment_log,
    "agent_output": agent_output,
    "review": review,
    "epic": epics,
    "story": story,
}

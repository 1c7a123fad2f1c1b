"""The planning writers: the analyst's specification and plan, the architect's architecture and
implementation plan, the product owner's epics and the scrum master's stories."""

from __future__ import annotations

from typing import Any

import msgspec

from app.llm.offline._job import INFRASTRUCTURE, MAX_EPICS, Job, Produced, _article, _describe, _join, _planned
from app.llm.offline._product import (
    FeatureIdea,
    class_name,
    feature_from_name,
    persona_names,
    sentence,
    slug,
)

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

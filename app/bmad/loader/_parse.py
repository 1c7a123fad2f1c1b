"""One BMAD file's text into what it describes: a workflow, a team, a task/checklist/data file, the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from app.agents.personas import BMAD_AGENT_TYPES
from app.bmad.loader._core import (
    _CHECK_ITEM,
    _HEADING,
    AGENT_PHASES,
    PHASES,
    STEP_KEYS,
    WORKFLOW_KEYS,
    BmadCore,
    BmadDoc,
    BmadFileError,
    Team,
    Workflow,
    WorkflowStep,
)
from app.core.safe_yaml import load_yaml
from app.documents.templates import Template
from app.tasks.models import AgentType


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(item) for item in value if item is not None]
    return [str(value)]


def _text(value: Any) -> str | None:
    return None if value is None else str(value).strip()


def agent_type_of(agent: str | None) -> AgentType | None:
    if not agent:
        return None
    first = agent.split("/")[0].strip()
    if first in BMAD_AGENT_TYPES:
        return BMAD_AGENT_TYPES[first]
    try:
        return AgentType(first)
    except ValueError:
        return None


def _looks_like_steps(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) for item in value)
        and any("agent" in item or "step" in item for item in value)
    )


def _step_list(body: dict[str, Any]) -> tuple[str, list[Any]]:
    """The key and the list of the workflow's steps: `sequence`, else the one list of steps it has
    under another name (`steps`, `full_game_sequence`, ...)."""
    sequence = body.get("sequence")
    if isinstance(sequence, list) and sequence:
        return "sequence", sequence
    others = [str(key) for key, value in body.items() if key != "sequence" and _looks_like_steps(value)]
    others.sort(key=lambda key: (key != "steps", not key.endswith("sequence")))
    if not others:
        raise BmadFileError("the workflow has no 'sequence' list of steps")
    return others[0], body[others[0]]


def parse_workflow(text: str, source: str) -> Workflow:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise BmadFileError(f"the YAML does not parse: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("workflow"), dict):
        raise BmadFileError("no 'workflow:' mapping")
    body: dict[str, Any] = data["workflow"]
    workflow_id = _text(body.get("id"))
    if not workflow_id:
        raise BmadFileError("the workflow has no id")
    list_key, sequence = _step_list(body)
    steps: list[WorkflowStep] = []
    unsupported: list[str] = []
    if list_key != "sequence":
        unsupported.append(f"the steps are read from {list_key!r}: BMAD names this list 'sequence'")
    previous_phase = PHASES[0]
    for index, raw in enumerate(sequence):
        if not isinstance(raw, dict):
            raise BmadFileError(f"{list_key}[{index}] is not a mapping")
        where = f"sequence[{index}]"
        agent = _text(raw.get("agent"))
        agent_type = agent_type_of(agent)
        phase = _text(raw.get("phase")) or AGENT_PHASES.get((agent or "").split("/")[0].strip(), previous_phase)
        if phase not in PHASES:
            raise BmadFileError(f"{where}: phase {phase!r} is not one of {', '.join(PHASES)}")
        previous_phase = phase
        if agent is not None and agent_type is None:
            unsupported.append(f"{where}: agent {agent!r} maps to none of our agents")
        if agent is None:
            unsupported.append(f"{where}: step {raw.get('step')!r} has no agent (kept as a marker)")
        unknown = {str(key): value for key, value in raw.items() if key not in STEP_KEYS}
        unsupported += [f"{where}: {key!r} is kept, not executed" for key in unknown]
        optional_steps = _texts(raw.get("optional_steps"))
        if optional_steps:
            unsupported.append(f"{where}: optional_steps are not run ({', '.join(optional_steps)})")
        steps.append(
            WorkflowStep(
                index=index,
                agent=agent,
                agent_type=agent_type,
                phase=phase,
                step=_text(raw.get("step")),
                creates=_texts(raw.get("creates")),
                updates=_texts(raw.get("updates")),
                requires=_texts(raw.get("requires")),
                condition=_text(raw.get("condition")),
                optional=bool(raw.get("optional", False)),
                repeats=_text(raw.get("repeats")),
                action=_text(raw.get("action")),
                notes=_text(raw.get("notes")),
                uses=_text(raw.get("uses")),
                validates=_text(raw.get("validates")),
                optional_steps=optional_steps,
                side_effects=bool(raw.get("side_effects", False)),
                unknown=unknown,
            )
        )
    unknown_keys = {str(key): value for key, value in body.items() if key not in WORKFLOW_KEYS | {list_key}}
    for key, value in unknown_keys.items():
        if _looks_like_steps(value):
            unsupported.append(f"{key!r} is another list of steps: kept, not run")
        else:
            unsupported.append(f"{key!r} is kept, not executed")
    outside = {str(key): value for key, value in data.items() if key != "workflow"}
    unsupported += [f"top-level {key!r} is kept, not executed" for key in outside]
    return Workflow(
        id=workflow_id,
        name=_text(body.get("name")) or workflow_id,
        description=_text(body.get("description")) or "",
        type=_text(body.get("type")),
        project_types=_texts(body.get("project_types")),
        steps=steps,
        source=source,
        unknown=unknown_keys | outside,
        unsupported=unsupported,
    )


def unresolved_documents(core: BmadCore, workflow: Workflow) -> list[str]:
    """The workflow's `uses:` names that resolve to no loaded task, checklist, data file or template.

    A `validates:` names what is validated (`all_artifacts`), which the engine resolves like a
    `requires`; it is a document only when it names a checklist.
    """
    notes: list[str] = []
    for step in workflow.steps:
        name = step.uses
        if not name or core.document(name) is not None or template_of(core, name) is not None:
            continue
        notes.append(f"sequence[{step.index}]: uses {name!r} names no loaded task, checklist, data file or template")
    return notes


def template_of(core: BmadCore, name: str) -> Template | None:
    """The template a `uses:` names by its file (`brownfield-prd-tmpl`) or its id."""
    stem = Path(name.strip()).name
    stem = Path(stem).stem if Path(stem).suffix in {".yaml", ".yml"} else stem
    if stem in core.templates:
        return core.templates[stem]
    for template_id, source in core.template_sources.items():
        if Path(source).stem == stem:
            return core.templates.get(template_id)
    return None


def cross_check(core: BmadCore) -> None:
    """Once everything is loaded: list each workflow's `uses:` / `validates:` that name no document."""
    for workflow in core.workflows.values():
        kept = [note for note in workflow.unsupported if note not in workflow.unresolved]
        workflow.unresolved = unresolved_documents(core, workflow)
        workflow.unsupported = kept + workflow.unresolved


def parse_team(text: str, source: str, team_id: str) -> Team:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise BmadFileError(f"the YAML does not parse: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("bundle"), dict):
        raise BmadFileError("no 'bundle:' mapping")
    bundle: dict[str, Any] = data["bundle"]
    return Team(
        id=team_id,
        name=_text(bundle.get("name")) or team_id,
        description=_text(bundle.get("description")) or "",
        agents=_texts(data.get("agents")),
        workflows=_texts(data.get("workflows")),
        source=source,
        unknown={key: value for key, value in data.items() if key not in {"bundle", "agents", "workflows"}},
    )


def parse_doc(text: str, source: str, doc_id: str, kind: str) -> BmadDoc:
    """A task, checklist or data file; any text loads. A checklist's items are its `- [ ]` lines."""
    title = doc_id
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        heading = None if fenced else _HEADING.match(line)
        if heading:
            title = heading.group(1)
            break
    items: tuple[str, ...] = ()
    if kind == "checklist":
        items = tuple(match.group(1) for line in text.splitlines() if (match := _CHECK_ITEM.match(line)))
    return BmadDoc(id=doc_id, kind=kind, title=title, text=text, items=items, source=source)


def parse_config(text: str) -> dict[str, Any]:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise BmadFileError(f"the YAML does not parse: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BmadFileError("core-config.yaml is not a mapping")
    return {str(key): value for key, value in data.items()}

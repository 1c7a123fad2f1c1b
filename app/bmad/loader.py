"""Load a `.bmad-core`-shaped directory: workflows, templates, agents and agent teams.

Any real BMAD-METHOD v4 file loads: what the engine does not understand is kept (`unknown`) and
reported (`unsupported`), never a crash. A malformed file is reported with its path and the
reason, and the rest still loads. Files are read only from inside the directory (a link that
points outside is refused), and YAML is only ever loaded with `yaml.safe_load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import yaml

from app.agents.personas import BMAD_AGENT_TYPES, Persona, PersonaFileError, parse_bmad_agent
from app.documents.templates import Template, TemplateError, parse_template
from app.tasks.models import AgentType

MAX_FILE_BYTES = 1024 * 1024
PHASES = ("discovery", "plan", "design", "build", "validate", "launch")
# The phase of a step whose workflow does not say: by its agent (po and sm take the step before's).
AGENT_PHASES: dict[str, str] = {
    "analyst": "discovery",
    "pm": "plan",
    "orchestrator": "plan",
    "architect": "design",
    "ux-expert": "design",
    "dev": "build",
    "coder": "build",
    "qa": "validate",
    "tester": "validate",
    "deployer": "launch",
    "devops": "launch",
}
STEP_KEYS = frozenset(
    {"agent", "step", "phase", "creates", "updates", "requires", "condition", "optional", "repeats", "action", "notes"}
    | {"uses", "validates", "optional_steps", "side_effects"}
)


class Problem(msgspec.Struct, frozen=True):
    path: str
    reason: str


class WorkflowStep(msgspec.Struct, kw_only=True):
    index: int
    agent: str | None
    agent_type: AgentType | None
    phase: str
    step: str | None = None
    creates: list[str] = msgspec.field(default_factory=list)
    updates: list[str] = msgspec.field(default_factory=list)
    requires: list[str] = msgspec.field(default_factory=list)
    condition: str | None = None
    optional: bool = False
    repeats: str | None = None
    action: str | None = None
    notes: str | None = None
    uses: str | None = None
    validates: str | None = None
    optional_steps: list[str] = msgspec.field(default_factory=list)
    # Work outside the server (deploy, push): at most once, a crash mid-step goes to a human.
    side_effects: bool = False
    unknown: dict[str, Any] = msgspec.field(default_factory=dict)


class Workflow(msgspec.Struct, kw_only=True):
    id: str
    name: str
    description: str
    type: str | None
    project_types: list[str]
    steps: list[WorkflowStep]
    source: str
    unknown: dict[str, Any] = msgspec.field(default_factory=dict)
    unsupported: list[str] = msgspec.field(default_factory=list)

    @property
    def agents(self) -> list[str]:
        return sorted({step.agent for step in self.steps if step.agent})


class Team(msgspec.Struct, kw_only=True):
    id: str
    name: str
    description: str
    agents: list[str]
    workflows: list[str]
    source: str
    unknown: dict[str, Any] = msgspec.field(default_factory=dict)


class BmadCore(msgspec.Struct, kw_only=True):
    workflows: dict[str, Workflow] = msgspec.field(default_factory=dict)
    templates: dict[str, Template] = msgspec.field(default_factory=dict)
    agents: dict[str, Persona] = msgspec.field(default_factory=dict)
    teams: dict[str, Team] = msgspec.field(default_factory=dict)
    problems: list[Problem] = msgspec.field(default_factory=list)


class BmadFileError(ValueError):
    """A file could not be used; the message is its reason."""


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


def parse_workflow(text: str, source: str) -> Workflow:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BmadFileError(f"the YAML does not parse: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("workflow"), dict):
        raise BmadFileError("no 'workflow:' mapping")
    body: dict[str, Any] = data["workflow"]
    workflow_id = _text(body.get("id"))
    if not workflow_id:
        raise BmadFileError("the workflow has no id")
    sequence = body.get("sequence")
    if not isinstance(sequence, list) or not sequence:
        raise BmadFileError("the workflow has no 'sequence' list of steps")
    steps: list[WorkflowStep] = []
    unsupported: list[str] = []
    previous_phase = PHASES[0]
    for index, raw in enumerate(sequence):
        if not isinstance(raw, dict):
            raise BmadFileError(f"sequence[{index}] is not a mapping")
        agent = _text(raw.get("agent"))
        agent_type = agent_type_of(agent)
        phase = _text(raw.get("phase")) or AGENT_PHASES.get((agent or "").split("/")[0].strip(), previous_phase)
        if phase not in PHASES:
            raise BmadFileError(f"sequence[{index}]: phase {phase!r} is not one of {', '.join(PHASES)}")
        previous_phase = phase
        if agent is not None and agent_type is None:
            unsupported.append(f"sequence[{index}]: agent {agent!r} maps to none of our agents")
        if agent is None:
            unsupported.append(f"sequence[{index}]: step {raw.get('step')!r} has no agent (kept as a marker)")
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
                optional_steps=_texts(raw.get("optional_steps")),
                side_effects=bool(raw.get("side_effects", False)),
                unknown={key: value for key, value in raw.items() if key not in STEP_KEYS},
            )
        )
    known = {"id", "name", "description", "type", "project_types", "sequence"}
    return Workflow(
        id=workflow_id,
        name=_text(body.get("name")) or workflow_id,
        description=_text(body.get("description")) or "",
        type=_text(body.get("type")),
        project_types=_texts(body.get("project_types")),
        steps=steps,
        source=source,
        unknown={key: value for key, value in body.items() if key not in known}
        | {key: value for key, value in data.items() if key != "workflow"},
        unsupported=unsupported,
    )


def parse_team(text: str, source: str, team_id: str) -> Team:
    try:
        data = yaml.safe_load(text)
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


def _read(root: Path, path: Path) -> str:
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise BmadFileError("it points outside the BMAD directory")
    if resolved.stat().st_size > MAX_FILE_BYTES:
        raise BmadFileError(f"larger than {MAX_FILE_BYTES} bytes")
    try:
        return resolved.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BmadFileError("not UTF-8 text") from None


def load_core(directory: Path, into: BmadCore | None = None) -> BmadCore:
    """Everything loadable under `directory`; a later directory's files replace earlier ones by id."""
    core = into or BmadCore()
    root = directory.resolve()
    if not root.is_dir():
        core.problems.append(Problem(str(directory), "not a directory"))
        return core
    for path in sorted(root.glob("workflows/*.y*ml")):
        try:
            workflow = parse_workflow(_read(root, path), str(path))
            core.workflows[workflow.id] = workflow
        except (BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc)))
    for path in sorted(root.glob("templates/*.y*ml")):
        try:
            template = parse_template(_read(root, path), str(path))
            core.templates[template.id] = template
        except (TemplateError, BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
    for path in sorted(root.glob("agents/*.md")):
        try:
            persona = parse_bmad_agent(_read(root, path), str(path))
            core.agents[path.stem] = persona
        except (PersonaFileError, BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
    for path in sorted(root.glob("agent-teams/*.y*ml")):
        try:
            core.teams[path.stem] = parse_team(_read(root, path), str(path), path.stem)
        except (BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc)))
    return core

"""Load a `.bmad-core`-shaped directory: workflows, templates, agents, agent teams, tasks,
checklists, data files and `core-config.yaml`.

Any real BMAD-METHOD v4 file loads: what the engine does not understand is kept (`unknown`) and
reported (`unsupported`), never a crash. An unknown agent id, an unknown step-list key or an
unknown field is listed as unsupported, never a whole-file failure. A malformed file (YAML that
does not parse, no step list at all, a section without an id) is a `Problem` with its path and
the reason, and the rest still loads. Files are read only from inside the directory (a link that
points outside is refused), and YAML is only ever loaded with `yaml.safe_load`, without aliases.
A file that is not a regular file (a FIFO, a device, a symlink loop), cannot be read or is too large
is a `Problem` too: nothing in the directory can hang the loader or make it fail as a whole.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

import msgspec
import yaml

from app.agents.personas import BMAD_AGENT_TYPES, BmadAgentFile, Persona, PersonaFileError, read_bmad_agent
from app.core.safe_yaml import load_yaml
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
WORKFLOW_KEYS = frozenset({"id", "name", "description", "type", "project_types", "sequence"})
# The folders of documents a step names by `uses:` / `validates:`, in the order a name is looked up.
DOC_KINDS = {"tasks": "task", "checklists": "checklist", "data": "data"}
DOC_SUFFIXES = (".md", ".yaml", ".yml", ".txt", ".csv")
CONFIG_FILE = "core-config.yaml"
CORE_PARTS = frozenset({"workflows", "templates", "agents", "agent-teams", *DOC_KINDS, CONFIG_FILE})
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_CHECK_ITEM = re.compile(r"^\s*[-*+]\s+\[[ xX]?\]\s+(.+?)\s*$")
STEP_KEYS = frozenset(
    {"agent", "step", "phase", "creates", "updates", "requires", "condition", "optional", "repeats", "action", "notes"}
    | {"uses", "validates", "optional_steps", "side_effects"}
)


class Problem(msgspec.Struct, frozen=True):
    path: str
    reason: str


class BmadDoc(msgspec.Struct, frozen=True, kw_only=True):
    """A task, checklist or data file: what a step's `uses:` / `validates:` names."""

    id: str  # file stem, e.g. "po-master-checklist", "create-next-story"
    kind: str  # "task" | "checklist" | "data"
    title: str  # first markdown heading, else the id
    text: str  # the whole file text
    items: tuple[str, ...] = ()  # checklists: every "- [ ] ..." item's text, in order (empty for others)
    source: str = ""


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
    # The `uses:` / `validates:` notes of `unsupported` that name no loaded document (recomputed
    # once every directory is loaded).
    unresolved: list[str] = msgspec.field(default_factory=list)

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
    # Personas of the agent files whose id maps to one of our types, keyed by the file's agent id.
    agents: dict[str, Persona] = msgspec.field(default_factory=dict)
    # Agent files whose id maps to none of our types: loaded, not used (also in `unsupported`).
    other_agents: dict[str, BmadAgentFile] = msgspec.field(default_factory=dict)
    teams: dict[str, Team] = msgspec.field(default_factory=dict)
    tasks: dict[str, BmadDoc] = msgspec.field(default_factory=dict)
    checklists: dict[str, BmadDoc] = msgspec.field(default_factory=dict)
    data: dict[str, BmadDoc] = msgspec.field(default_factory=dict)
    config: dict[str, Any] = msgspec.field(default_factory=dict)  # core-config.yaml, {} if absent
    # Files that could not be loaded, with the reason.
    problems: list[Problem] = msgspec.field(default_factory=list)
    # Files (or entries) loaded or seen but not used, with the reason: never a failure.
    unsupported: list[Problem] = msgspec.field(default_factory=list)
    # Every file that loaded, by path.
    loaded: list[str] = msgspec.field(default_factory=list)
    template_sources: dict[str, str] = msgspec.field(default_factory=dict)  # template id → its file

    def document(self, name: str | None) -> BmadDoc | None:
        """A step's `uses:`/`validates:` name resolved: tasks first, then checklists, then data;
        accepts 'x', 'x.md', 'tasks/x.md'. None when unknown."""
        if not name or not name.strip():
            return None
        folder, _, file_name = name.strip().replace("\\", "/").rpartition("/")
        stem = Path(file_name).stem if Path(file_name).suffix in DOC_SUFFIXES else file_name
        kinds: list[dict[str, BmadDoc]] = [self.tasks, self.checklists, self.data]
        preferred = {"tasks": self.tasks, "checklists": self.checklists, "data": self.data}.get(
            folder.rsplit("/", 1)[-1]
        )
        if preferred is not None:
            kinds = [preferred]
        return next((docs[stem] for docs in kinds if stem in docs), None)

    def persona(self, bmad_agent: str | None) -> Persona | None:
        """The persona of a workflow step's `agent:` (e.g. 'pm', 'ux-expert', 'analyst/pm' → first id) from the
        loaded agent files, keyed by the file's agent id; None when no file was loaded for it."""
        if not bmad_agent:
            return None
        return self.agents.get(bmad_agent.split("/")[0].strip())


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


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "not readable (permission denied)"
    if exc.errno == errno.ENOENT:
        return "a broken link (its target does not exist)"
    return f"not readable ({exc.strerror or type(exc).__name__})"


def _read(root: Path, path: Path) -> str:
    """The text of a regular file inside `root`. Opened without blocking (a FIFO would wait for a
    writer forever) and checked on the open descriptor, so that nothing swapped in meanwhile counts."""
    try:
        resolved = path.resolve()
    except RuntimeError:  # Python before 3.13 reports a symlink loop so
        raise BmadFileError("a symlink loop") from None
    except OSError as exc:
        raise BmadFileError(_os_reason(exc)) from None
    if not resolved.is_relative_to(root):
        raise BmadFileError("it points outside the BMAD directory")
    try:
        descriptor = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise BmadFileError(_os_reason(exc)) from None
    try:
        with os.fdopen(descriptor, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise BmadFileError("not a regular file (a FIFO, a device or a socket)")
            if info.st_size > MAX_FILE_BYTES:
                raise BmadFileError(f"larger than {MAX_FILE_BYTES} bytes")
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BmadFileError(_os_reason(exc)) from None
    if len(data) > MAX_FILE_BYTES:
        raise BmadFileError(f"larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BmadFileError("not UTF-8 text") from None


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


def _files(root: Path, folder: str, suffixes: tuple[str, ...], core: BmadCore) -> list[Path]:
    """The files of `folder` to load; any other entry in it is listed as unsupported."""
    directory = root / folder
    if not directory.is_dir():
        return []
    chosen: list[Path] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        core.problems.append(Problem(str(directory), _os_reason(exc)))
        return []
    for path in entries:
        if path.name.startswith("."):
            continue
        # Whatever is named like a file to load is read, and `_read` reports what it really is
        # (a FIFO, a symlink loop, an unreadable file) as a problem of that file.
        if path.suffix in suffixes and not path.is_dir():
            chosen.append(path)
        else:
            what = "a folder" if path.is_dir() else "a file"
            core.unsupported.append(
                Problem(str(path), f"{what} not read: {folder}/ holds {' or '.join(suffixes)} files")
            )
    return chosen


def load_core(directory: Path, into: BmadCore | None = None) -> BmadCore:
    """Everything loadable under `directory`; a later directory's files replace earlier ones by id."""
    core = into or BmadCore()
    try:
        root = directory.resolve()
    except (RuntimeError, OSError):
        core.problems.append(Problem(str(directory), "a symlink loop"))
        return core
    if not root.is_dir():
        core.problems.append(Problem(str(directory), "not a directory"))
        return core
    try:
        top = sorted(root.iterdir())
    except OSError as exc:
        core.problems.append(Problem(str(directory), _os_reason(exc)))
        return core
    for path in top:
        if path.name not in CORE_PARTS and not path.name.startswith("."):
            core.unsupported.append(Problem(str(path), "not read: not part of a BMAD core"))
    yaml_files = (".yaml", ".yml")
    for path in _files(root, "workflows", yaml_files, core):
        try:
            workflow = parse_workflow(_read(root, path), str(path))
            core.workflows[workflow.id] = workflow
            core.loaded.append(str(path))
        except (BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc)))
    for path in _files(root, "templates", yaml_files, core):
        try:
            template = parse_template(_read(root, path), str(path))
            core.templates[template.id] = template
            core.template_sources[template.id] = str(path)
            core.loaded.append(str(path))
        except (TemplateError, BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
    for path in _files(root, "agents", (".md",), core):
        try:
            agent = read_bmad_agent(_read(root, path), str(path), default_id=path.stem)
        except (PersonaFileError, BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        core.loaded.append(str(path))
        core.agents.pop(agent.id, None)
        core.other_agents.pop(agent.id, None)
        if agent.persona is None:
            core.other_agents[agent.id] = agent
            core.unsupported.append(Problem(str(path), f"{agent.unsupported}: loaded, not used"))
        else:
            core.agents[agent.id] = agent.persona
    for path in _files(root, "agent-teams", yaml_files, core):
        try:
            core.teams[path.stem] = parse_team(_read(root, path), str(path), path.stem)
            core.loaded.append(str(path))
        except (BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(path), str(exc)))
    for folder, kind in DOC_KINDS.items():
        docs: dict[str, BmadDoc] = getattr(core, folder)
        for path in _files(root, folder, DOC_SUFFIXES, core):
            try:
                docs[path.stem] = parse_doc(_read(root, path), str(path), path.stem, kind)
                core.loaded.append(str(path))
            except (BmadFileError, OSError) as exc:
                core.problems.append(Problem(str(path), str(exc)))
    config = root / CONFIG_FILE
    if config.is_symlink() or config.exists():
        try:
            core.config.update(parse_config(_read(root, config)))
            core.loaded.append(str(config))
        except (BmadFileError, OSError) as exc:
            core.problems.append(Problem(str(config), str(exc)))
    cross_check(core)
    return core

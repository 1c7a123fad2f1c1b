"""What a loaded BMAD core holds: workflows and their steps, teams, documents, and problems."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from app.agents.personas import BmadAgentFile, Persona
from app.documents.templates import Template
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

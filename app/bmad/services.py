"""The BMAD core the server runs: ours (`app/bmad_core`), overlaid by `BOTARMY_BMAD_DIR` if set."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio.to_thread

from app.bmad.loader import BmadCore, Team, Workflow, agent_type_of, load_core
from app.core.exceptions import NotFoundError
from app.documents.templates import Template

DEFAULT_CORE_DIR = Path(__file__).resolve().parent.parent / "bmad_core"

_cores: dict[str | None, BmadCore] = {}
_loading = threading.Lock()


def bmad_core(extra_dir: str | None) -> BmadCore:
    """Loaded once per process: the files are read at the first use, not on every request.

    Reads files: call it from a thread (or at start-up), never on the event loop; handlers use
    `loaded_bmad_core`.
    """
    with _loading:  # two first uses at once load it once
        core = _cores.get(extra_dir)
        if core is None:
            core = load_core(DEFAULT_CORE_DIR)
            if extra_dir:
                load_core(Path(extra_dir).expanduser(), core)
            _cores[extra_dir] = core
        return core


async def loaded_bmad_core(extra_dir: str | None) -> BmadCore:
    """The loaded core; its first use reads the files in a worker thread, so that a slow disk (or a
    directory being changed under it) never stalls the event loop."""
    core = _cores.get(extra_dir)
    if core is not None:
        return core
    return await anyio.to_thread.run_sync(bmad_core, extra_dir)


def forget_bmad_cores() -> None:
    """Drop the loaded cores: the next use reads the files again."""
    with _loading:
        _cores.clear()


class BmadService:
    def __init__(self, core: BmadCore) -> None:
        self.core = core

    def workflow(self, workflow_id: str) -> Workflow:
        if workflow_id not in self.core.workflows:
            raise NotFoundError(
                f"Workflow {workflow_id!r} does not exist; known: {', '.join(sorted(self.core.workflows))}."
            )
        return self.core.workflows[workflow_id]

    def template(self, template_id: str) -> Template:
        if template_id not in self.core.templates:
            raise NotFoundError(
                f"Template {template_id!r} does not exist; known: {', '.join(sorted(self.core.templates))}."
            )
        return self.core.templates[template_id]

    def team(self, team_id: str) -> Team:
        if team_id not in self.core.teams:
            raise NotFoundError(f"Team {team_id!r} does not exist; known: {', '.join(sorted(self.core.teams))}.")
        return self.core.teams[team_id]

    def teams_for(self, workflow_id: str) -> list[Team]:
        workflow = self.workflow(workflow_id)
        file_names = {Path(workflow.source).name, f"{workflow.id}.yaml", f"{workflow.id}.yml"}
        return [team for team in self.core.teams.values() if file_names & set(team.workflows)]

    def team_problems(self, team: Team) -> list[str]:
        """What a team names that is not there: a workflow that is not loaded."""
        known_files = {Path(workflow.source).name for workflow in self.core.workflows.values()}
        known_files |= {f"{workflow_id}.yaml" for workflow_id in self.core.workflows}
        return [f"workflow {name!r} is not loaded" for name in team.workflows if name not in known_files]

    def team_unsupported(self, team: Team) -> list[str]:
        """The team's agents this server does not run (`*` is every agent: supported)."""
        return [
            f"agent {agent!r} maps to none of our agents"
            for agent in team.agents
            if agent != "*" and agent_type_of(agent) is None
        ]

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

from app.bmad.loader._core import BmadCore, BmadDoc, BmadFileError, Problem, Team, Workflow, WorkflowStep
from app.bmad.loader._files import load_core
from app.bmad.loader._parse import agent_type_of, template_of

__all__ = [
    "BmadCore",
    "BmadDoc",
    "BmadFileError",
    "Problem",
    "Team",
    "Workflow",
    "WorkflowStep",
    "agent_type_of",
    "load_core",
    "template_of",
]

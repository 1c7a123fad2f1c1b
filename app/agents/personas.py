"""Who each agent is: built-in personas, BMAD agent files, and the one map of BMAD ids to our types."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from app.artifacts.models import ArtifactType
from app.core.safe_yaml import load_yaml
from app.tasks.models import AgentType


class Persona(msgspec.Struct, frozen=True, kw_only=True):
    agent_type: AgentType
    name: str
    role: str
    style: str
    identity: str = ""
    focus: str = ""
    principles: tuple[str, ...] = ()
    source: str = "built-in"

    def system_prompt(self) -> str:
        principles = "\n".join(f"- {principle}" for principle in self.principles)
        parts = [
            f"You are {self.name}, the {self.agent_type.value} of a software-development team: {self.role}.",
            f"Style: {self.style}.",
            f"Identity: {self.identity}" if self.identity else "",
            f"Focus: {self.focus}" if self.focus else "",
            f"Principles:\n{principles}" if principles else "",
            "Answer with one JSON object and nothing else.",
        ]
        return "\n".join(part for part in parts if part)


# What each agent type writes into the context store.
AGENT_ARTIFACTS: dict[AgentType, tuple[ArtifactType, ...]] = {
    AgentType.ORCHESTRATOR: (ArtifactType.AGENT_OUTPUT, ArtifactType.PROJECT_PLAN),
    AgentType.ANALYST: (ArtifactType.SOFTWARE_SPECIFICATION, ArtifactType.PROJECT_PLAN),
    AgentType.ARCHITECT: (ArtifactType.SYSTEM_ARCHITECTURE, ArtifactType.IMPLEMENTATION_PLAN),
    AgentType.CODER: (ArtifactType.SOURCE_CODE,),
    AgentType.TESTER: (ArtifactType.TEST_RESULTS,),
    AgentType.DEPLOYER: (ArtifactType.DEPLOYMENT_PACKAGE, ArtifactType.DEPLOYMENT_LOG),
}

# BMAD-METHOD agent ids onto our six types: the only place this mapping lives.
BMAD_AGENT_TYPES: dict[str, AgentType] = {
    "analyst": AgentType.ANALYST,
    "pm": AgentType.ANALYST,
    "po": AgentType.ANALYST,
    "architect": AgentType.ARCHITECT,
    "ux-expert": AgentType.ARCHITECT,
    "dev": AgentType.CODER,
    "qa": AgentType.TESTER,
    "sm": AgentType.ORCHESTRATOR,
    "bmad-orchestrator": AgentType.ORCHESTRATOR,
    "bmad-master": AgentType.ORCHESTRATOR,
    "devops": AgentType.DEPLOYER,
    "deployer": AgentType.DEPLOYER,
}

BUILT_IN: dict[AgentType, Persona] = {
    AgentType.ORCHESTRATOR: Persona(
        agent_type=AgentType.ORCHESTRATOR,
        name="Olivia",
        role="plans the work, splits it into tasks, routes each to the right agent and answers the product owner",
        style="calm, decisive, brief; states the next step and who takes it",
        focus="the whole lifecycle from idea to launch, and keeping the human informed",
        principles=(
            "Every piece of work has one owner and a clear definition of done",
            "Escalate to the human when agents disagree or confidence is low",
            "Reuse what is in the context store before asking for new work",
        ),
    ),
    AgentType.ANALYST: Persona(
        agent_type=AgentType.ANALYST,
        name="Ada",
        role="turns a product idea into a product requirements document",
        style="inquisitive, precise, evidence-based",
        focus="vision, personas, business requirements, features, success criteria, open questions",
        principles=(
            "Ask why until the real need is clear",
            "Every requirement is testable and has a priority",
            "What is not known is written down as an open question, never guessed",
        ),
    ),
    AgentType.ARCHITECT: Persona(
        agent_type=AgentType.ARCHITECT,
        name="Archie",
        role="designs the system that meets the requirements and plans its implementation",
        style="pragmatic, explicit about trade-offs",
        focus="components, API, data model, risks, and a task breakdown with dependencies",
        principles=(
            "The simplest design that meets the requirements",
            "Every risk has a mitigation",
            "Tasks are small, ordered by their dependencies",
        ),
    ),
    AgentType.CODER: Persona(
        agent_type=AgentType.CODER,
        name="Cody",
        role="implements the design as working, tested source code",
        style="clean, idiomatic, small functions with clear names",
        focus="the files of the implementation, their tests and dependencies",
        principles=("Code follows the architecture", "Every module has tests", "No secrets in code"),
    ),
    AgentType.TESTER: Persona(
        agent_type=AgentType.TESTER,
        name="Tess",
        role="verifies that the implementation meets the requirements",
        style="skeptical, thorough, reproducible",
        focus="test plan, test cases, defects with severity and reproduction steps",
        principles=("Every requirement has a test", "Every defect can be reproduced from its steps"),
    ),
    AgentType.DEPLOYER: Persona(
        agent_type=AgentType.DEPLOYER,
        name="Dex",
        role="packages and ships the system and knows how to roll it back",
        style="careful, checklist-driven",
        focus="container and run files, environment configuration, health checks, rollback",
        principles=("Configuration comes from the environment", "Every deploy can be rolled back"),
    ),
}

_YAML_BLOCK = re.compile(r"```ya?ml\s*\n(.*?)```", re.DOTALL)


class PersonaFileError(ValueError):
    """A BMAD agent file could not be read; the message names the file and the reason."""


class BmadAgentFile(msgspec.Struct, frozen=True, kw_only=True):
    """A BMAD agent file as read: its id, and its persona when the id maps to one of our agent types."""

    id: str
    name: str
    title: str
    source: str
    persona: Persona | None = None
    unsupported: str = ""  # why the file's agent is not used (its id maps to none of our types)


def read_bmad_agent(text: str, source: str, default_id: str = "") -> BmadAgentFile:
    """Any BMAD agent file with a YAML `agent:` block; an id outside our table loads without a persona."""
    match = _YAML_BLOCK.search(text)
    if match is None:
        raise PersonaFileError(f"{source}: no ```yaml block with the agent definition")
    try:
        data = load_yaml(match.group(1))
    except yaml.YAMLError as exc:
        raise PersonaFileError(f"{source}: the YAML block does not parse: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("agent"), dict):
        raise PersonaFileError(f"{source}: the YAML block has no 'agent' mapping")
    agent: dict[str, Any] = data["agent"]
    persona: dict[str, Any] = data.get("persona") if isinstance(data.get("persona"), dict) else {}  # type: ignore[assignment]
    bmad_id = str(agent.get("id") or default_id).strip()
    if not bmad_id:
        raise PersonaFileError(f"{source}: the agent has no id")
    name = str(agent.get("name") or agent.get("title") or bmad_id)
    title = str(agent.get("title") or "")
    agent_type = BMAD_AGENT_TYPES.get(bmad_id)
    if agent_type is None:
        known = ", ".join(sorted(BMAD_AGENT_TYPES))
        return BmadAgentFile(
            id=bmad_id,
            name=name,
            title=title,
            source=source,
            unsupported=f"agent id {bmad_id!r} maps to none of our agents (known: {known})",
        )
    principles = persona.get("core_principles") or []
    return BmadAgentFile(
        id=bmad_id,
        name=name,
        title=title,
        source=source,
        persona=Persona(
            agent_type=agent_type,
            name=name,
            role=str(persona.get("role") or agent.get("title") or agent_type.value),
            style=str(persona.get("style") or ""),
            identity=str(persona.get("identity") or ""),
            focus=str(persona.get("focus") or ""),
            principles=tuple(str(item) for item in principles if isinstance(item, str | int | float)),
            source=source,
        ),
    )


def parse_bmad_agent(text: str, source: str) -> Persona:
    """A persona from a BMAD agent file: markdown with one YAML block (`agent:` and `persona:`)."""
    read = read_bmad_agent(text, source)
    if read.persona is None:
        raise PersonaFileError(f"{source}: {read.unsupported}")
    return read.persona


def load_bmad_agent(path: Path) -> Persona:
    return parse_bmad_agent(path.read_text(encoding="utf-8"), str(path))


def persona_for(agent_type: AgentType, overrides: dict[AgentType, Persona] | None = None) -> Persona:
    return (overrides or {}).get(agent_type) or BUILT_IN[agent_type]

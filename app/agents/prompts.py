"""The prompt of one agent task: persona, instructions, selected context, and the output template."""

from __future__ import annotations

import functools
import re
from typing import Any
from uuid import UUID

import msgspec

from app.agents.outputs import ANSWER_SCHEMA
from app.agents.personas import Persona
from app.artifacts.content import content_schema
from app.artifacts.models import ArtifactType
from app.llm.base import ModelRequest
from app.tasks.schemas import StepBrief

# Roughly 4 characters a token: the whole injected context stays under ~6k tokens by default.
DEFAULT_CONTEXT_BUDGET_CHARS = 24_000
# What each kind of work reads first, when the task names several artifacts.
PREFERRED_CONTEXT: dict[str, tuple[ArtifactType, ...]] = {
    "analyst": (ArtifactType.USER_INPUT, ArtifactType.HITL_RESPONSE),
    "architect": (ArtifactType.SOFTWARE_SPECIFICATION, ArtifactType.PROJECT_PLAN, ArtifactType.USER_INPUT),
    "coder": (ArtifactType.IMPLEMENTATION_PLAN, ArtifactType.SYSTEM_ARCHITECTURE, ArtifactType.SOFTWARE_SPECIFICATION),
    "tester": (ArtifactType.SOURCE_CODE, ArtifactType.SOFTWARE_SPECIFICATION, ArtifactType.IMPLEMENTATION_PLAN),
    "deployer": (ArtifactType.SOURCE_CODE, ArtifactType.SYSTEM_ARCHITECTURE, ArtifactType.TEST_RESULTS),
    "orchestrator": (ArtifactType.USER_INPUT, ArtifactType.PROJECT_PLAN, ArtifactType.AGENT_OUTPUT),
}
# Types a step may write several of in one answer: one epic each of a sharded PRD.
MANY = frozenset({ArtifactType.EPIC})
_WORD = re.compile(r"[a-z0-9]{3,}")
_encoder = msgspec.json.Encoder()


class ContextItem(msgspec.Struct, frozen=True, kw_only=True):
    artifact_id: UUID
    artifact_type: str
    title: str
    content: Any
    source_agent: str | None = None


class PromptContext(msgspec.Struct, frozen=True, kw_only=True):
    """What went into a prompt: the request, and which artifacts were injected or left out."""

    request: ModelRequest
    injected: list[UUID]
    omitted: list[UUID]
    output_types: tuple[ArtifactType, ...] = ()


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def rank_context(agent_type: str, instructions: str, items: list[ContextItem]) -> list[ContextItem]:
    """Most relevant first: the types this agent reads first, then overlap with the instructions."""
    preferred = PREFERRED_CONTEXT.get(agent_type, ())
    wanted = _words(instructions)

    def score(item: ItemWithIndex) -> tuple[int, int, int]:
        index, context = item
        type_rank = preferred.index(ArtifactType(context.artifact_type)) if context.artifact_type in preferred else 99
        overlap = len(wanted & _words(f"{context.title} {_encoder.encode(context.content).decode()[:4000]}"))
        return (type_rank, -overlap, index)

    return [context for _, context in sorted(enumerate(items), key=score)]


ItemWithIndex = tuple[int, ContextItem]


@functools.cache
def _schema_text(artifact_type: ArtifactType) -> str:
    """The JSON schema of a content type, as the prompt shows it: made once (msgspec builds it anew
    on every call, a few percent of a worker's CPU per task)."""
    return _encoder.encode(content_schema(artifact_type)).decode()


def build_prompt(
    persona: Persona,
    instructions: str,
    artifact_types: tuple[ArtifactType, ...],
    context: list[ContextItem],
    *,
    feedback: str | None = None,
    budget_chars: int = DEFAULT_CONTEXT_BUDGET_CHARS,
    brief: StepBrief | None = None,
) -> PromptContext:
    brief = brief or StepBrief()
    ranked = rank_context(persona.agent_type.value, instructions, context)
    # The step's BMAD task file and checklist come out of the same budget as the context.
    how = f"# How (BMAD task {brief.task_file})\n{brief.task_text}" if brief.task_text else ""
    checklist = (
        f"# Checklist ({brief.checklist}): check every item against the context, in order; each item is one "
        "finding of your review (pass, fail, partial or not_applicable, with a note)\n"
        + "\n".join(f"- [ ] {item}" for item in brief.checklist_items)
        if brief.checklist_items
        else ""
    )
    budget_chars = max(0, budget_chars - len(how) - len(checklist))
    sections: list[str] = []
    injected: list[UUID] = []
    omitted: list[UUID] = []
    hint_context: list[dict[str, Any]] = []
    used = 0
    for item in ranked:
        body = _encoder.encode(item.content).decode()
        block = f"## {item.title} ({item.artifact_type}, id {item.artifact_id})\n{body}"
        if used + len(block) > budget_chars:
            omitted.append(item.artifact_id)
            continue
        used += len(block)
        sections.append(block)
        injected.append(item.artifact_id)
        hint_context.append(
            {
                "artifact_id": str(item.artifact_id),
                "artifact_type": item.artifact_type,
                "title": item.title,
                "content": item.content,
            }
        )
    outputs = "\n".join(
        f"- {artifact_type.value}{' (one artifact for each)' if artifact_type in MANY else ''}: content must match "
        f"{_schema_text(artifact_type)}"
        for artifact_type in artifact_types
    )
    parts = [
        f"# Task\n{instructions}",
        how,
        checklist,
        f"# Feedback from the product owner on your previous answer\n{feedback}" if feedback else "",
        f"# Context ({len(injected)} of {len(ranked)} artifacts, most relevant first)\n" + "\n\n".join(sections)
        if sections
        else "# Context\n(none)",
        "# Output\nAnswer with one JSON object matching this schema:\n"
        f"{_encoder.encode(ANSWER_SCHEMA).decode()}\n"
        f"Produce one artifact of each of these types:\n{outputs}\n"
        "Set confidence between 0 and 1. Put anything you could not decide yourself in open_questions. If your "
        "work contradicts an artifact of the context, say so in conflicts (its id, your position, why, evidence).",
    ]
    request = ModelRequest(
        system=persona.system_prompt(),
        prompt="\n\n".join(part for part in parts if part),
        output_schema=ANSWER_SCHEMA,
        hints={
            "agent_type": persona.agent_type.value,
            "artifact_types": [artifact_type.value for artifact_type in artifact_types],
            "instructions": instructions,
            "feedback": feedback or "",
            "context": hint_context,
            "persona": persona.name,
            "action": brief.action,
            "checklist": brief.checklist,
            "checklist_items": list(brief.checklist_items),
            "item": brief.item,
            "reviews": list(brief.reviews),
        },
    )
    return PromptContext(request=request, injected=injected, omitted=omitted, output_types=artifact_types)

"""What agents answer: one envelope around artifacts whose content has the schema of their type
(`app.artifacts.content`)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app.artifacts.content import Short, Text, UUIDText
from app.artifacts.models import ArtifactType

# -- the envelope ----------------------------------------------------------------------------


class ProducedArtifact(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    artifact_type: ArtifactType
    title: Short
    content: dict[str, Any]


class Disagreement(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The agent's work contradicts an artifact it was given (the architect and the PRD, the tester's
    defects and the coder's claims): what about, its position, why, and the evidence."""

    artifact_id: UUIDText | None = None
    topic: Short
    position: Text
    reasoning: Text
    evidence: Annotated[list[Text], Meta(max_length=10)] = msgspec.field(default_factory=list)


class AgentAnswer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    summary: Text
    artifacts: Annotated[list[ProducedArtifact], Meta(min_length=1, max_length=10)]
    confidence: Annotated[float, Meta(ge=0, le=1)]
    # Questions the agent could not answer itself; a non-empty list pauses the task for a human.
    open_questions: Annotated[list[Text], Meta(max_length=20)] = msgspec.field(default_factory=list)
    # Named facts for workflow conditions (e.g. {"needs_ux": true}).
    flags: Annotated[dict[str, bool], Meta(max_length=50)] = msgspec.field(default_factory=dict)
    # Contradictions with the given artifacts; the orchestrator mediates, then a human decides.
    conflicts: Annotated[list[Disagreement], Meta(max_length=10)] = msgspec.field(default_factory=list)


ANSWER_SCHEMA: dict[str, Any] = msgspec.json.schema(AgentAnswer)

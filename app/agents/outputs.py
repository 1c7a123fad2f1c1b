"""What agents answer: one envelope around artifacts whose content has the schema of their type
(`app.artifacts.content`), and how an answer is checked and cleaned before anything is stored."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app.artifacts.content import CODE_TYPES, CONTENT_TYPES, Short, Text, UUIDText
from app.artifacts.models import ArtifactType
from app.core.sanitize import clean_json, strip_active_content

# Largest content of one artifact, encoded; a bigger answer is invalid (and retried).
MAX_ARTIFACT_BYTES = 512 * 1024


class InvalidAnswerError(Exception):
    """The model answered, but not with what was asked: a failed attempt, with the reason."""


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


def _strip_prose(value: Any) -> Any:
    if isinstance(value, str):
        return strip_active_content(value)
    if isinstance(value, dict):
        return {key: _strip_prose(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strip_prose(item) for item in value]
    return value


def parse_answer(text: str, allowed: tuple[ArtifactType, ...]) -> AgentAnswer:
    """Decode, check against the schemas and clean an answer; InvalidAnswerError says what is wrong."""
    try:
        answer = msgspec.json.decode(text, type=AgentAnswer)
    except msgspec.DecodeError as exc:
        raise InvalidAnswerError(f"the answer does not match the answer schema: {exc}") from None
    produced = []
    for index, artifact in enumerate(answer.artifacts):
        if artifact.artifact_type not in allowed:
            kinds = ", ".join(kind.value for kind in allowed)
            raise InvalidAnswerError(f"artifacts[{index}]: {artifact.artifact_type.value} is not one of {kinds}")
        try:
            content = msgspec.convert(artifact.content, CONTENT_TYPES[artifact.artifact_type])
        except msgspec.ValidationError as exc:
            raise InvalidAnswerError(f"artifacts[{index}] ({artifact.artifact_type.value}): {exc}") from None
        cleaned = clean_json(msgspec.to_builtins(content))
        if artifact.artifact_type not in CODE_TYPES:  # prose: no markup that could run when shown
            cleaned = _strip_prose(cleaned)
        if len(msgspec.json.encode(cleaned)) > MAX_ARTIFACT_BYTES:
            raise InvalidAnswerError(f"artifacts[{index}]: larger than {MAX_ARTIFACT_BYTES} bytes")
        produced.append(msgspec.structs.replace(artifact, title=clean_json(artifact.title), content=cleaned))
    return msgspec.structs.replace(
        answer,
        artifacts=produced,
        summary=strip_active_content(clean_json(answer.summary)),
        open_questions=[strip_active_content(clean_json(question)) for question in answer.open_questions],
    )

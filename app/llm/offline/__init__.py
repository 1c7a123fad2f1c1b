"""The offline provider: deterministic, no network, and a complete, schema-valid answer.

It writes each requested artifact from the task's instructions and the injected context, so that
every agent and every workflow runs on a fresh machine. The same request always gives the same
answer. A few directives in the instructions make it behave like a real model for tests and demos:
`[[offline:confidence=0.4]]`, `[[offline:question=...]]` (an open question), `[[offline:delay=2.5]]`
(seconds the call takes), `[[offline:fail=transient|permanent]]`, `[[offline:invalid]]` (an answer
that does not match the schema), `[[offline:flags=a,!b]]` (workflow flags: a true, b false),
`[[offline:conflict=topic]]` (the agent contradicts its first context artifact on `topic`; the
orchestrator, mediating, resolves it) and `[[offline:deadlock]]` (the orchestrator cannot).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec

from app.llm.base import ModelRequest, ModelResponse, OnDelta, PermanentModelError, TransientModelError
from app.llm.offline._job import MAX_ARTIFACTS, Job
from app.llm.offline._product import Product, analyse
from app.llm.offline._writers import WRITERS

__all__ = ["OfflineProvider", "estimate_tokens"]

_DIRECTIVE = re.compile(r"\[\[offline:(\w+)(?:=([^\]]*))?\]\]")
# The first line of a workflow step's instructions: "<workflow>, step 2 of 19 (plan phase): create prd.md."
_STEP_LINE = re.compile(r"^.+, step \d+ of \d+ \([^)]*\): .*$")
_RUN_ITEM = re.compile(r"\n?This run is item \d+ of \d+; do only this one: .*", re.DOTALL)
_IDEA_LINE = re.compile(r"^Product idea:[ \t]*(.*)", re.MULTILINE | re.DOTALL)
_TITLE_PREFIX = re.compile(r"^[^:]{1,40}: (.+?)(?: \(revised: .*)?$")
_encoder = msgspec.json.Encoder()


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def idea_of(instructions: str, context: list[dict[str, Any]]) -> str:
    """The user's idea: the `user_input` artifact, else the instructions' "Product idea:" line, else the
    instructions themselves (never a workflow step's first line, which names the workflow)."""
    for item in context:
        content = item.get("content")
        if item.get("artifact_type") == "user_input" and isinstance(content, dict):
            text = str(content.get("text") or "").strip()
            if text:
                return text
    plain = _RUN_ITEM.sub("", _DIRECTIVE.sub("", instructions)).strip()
    found = _IDEA_LINE.search(plain)
    if found:
        return found.group(1).strip()
    if _STEP_LINE.match(plain.splitlines()[0] if plain else ""):
        return ""
    return plain


def product_of(instructions: str, context: list[dict[str, Any]]) -> Product:
    idea = idea_of(instructions, context)
    if not idea:
        for item in context:
            named = _TITLE_PREFIX.match(str(item.get("title") or ""))
            if named and item.get("artifact_type") != "user_input":
                return analyse(named.group(1))
    return analyse(idea)


class OfflineProvider:
    name = "offline"

    async def aclose(self) -> None:
        """Nothing to release: no connections."""

    async def complete(self, request: ModelRequest, *, model: str, on_delta: OnDelta | None = None) -> ModelResponse:
        hints = request.hints
        instructions = str(hints.get("instructions", request.prompt))
        directives = {key: value for key, value in _DIRECTIVE.findall(instructions)}
        if "delay" in directives:
            await asyncio.sleep(float(directives["delay"] or 1))
        if directives.get("fail") == "transient":
            raise TransientModelError("offline: simulated transient failure", code="server_error", status_code=503)
        if directives.get("fail") == "permanent":
            raise PermanentModelError("offline: simulated permanent failure", code="bad_request", status_code=400)
        context: list[dict[str, Any]] = [item for item in hints.get("context", []) if isinstance(item, dict)]
        product = product_of(instructions, context)
        kinds = [str(kind) for kind in hints.get("artifact_types", ["agent_output"])] or ["agent_output"]
        first_line = instructions.strip().splitlines()[0].lower() if instructions.strip() else ""
        job = Job(
            product=product,
            context=context,
            hints=hints,
            feedback=str(hints.get("feedback") or "").strip(),
            brief="brief" in first_line or "brief" in str(hints.get("action") or ""),
            budget=MAX_ARTIFACTS - len(kinds) + 1,
        )
        artifacts = [
            {"artifact_type": kind, "title": title, "content": content}
            for kind in kinds
            for title, content in WRITERS[kind](job)
        ][:MAX_ARTIFACTS]
        answer: dict[str, Any] = {
            "summary": f"{hints.get('agent_type', 'agent')} finished: {artifacts[0]['title']}",
            "artifacts": artifacts,
            "confidence": float(directives.get("confidence") or 0.9),
            "open_questions": [directives["question"]] if directives.get("question") else [],
            "flags": {
                name.strip().lstrip("!"): not name.strip().startswith("!")
                for name in (directives.get("flags") or "").split(",")
                if name.strip().lstrip("!")
            },
        }
        mediating = hints.get("agent_type") == "orchestrator"
        if directives.get("conflict") and (not mediating or "deadlock" in directives):
            disputed = context[0] if context else {}
            answer["conflicts"] = [
                {
                    "artifact_id": disputed.get("artifact_id"),
                    "topic": directives["conflict"][:300],
                    "position": f"The {hints.get('agent_type')} holds that {directives['conflict']} must change.",
                    "reasoning": f"{disputed.get('title', 'The given document')} cannot hold as written.",
                    "evidence": [f"Seen while working on: {product.name}"],
                }
            ]
        if "invalid" in directives:
            answer["confidence"] = "very"
        text = _encoder.encode(answer).decode()
        if on_delta is not None:
            for start in range(0, len(text), 400):
                await on_delta(text[start : start + 400])
        return ModelResponse(
            text=text,
            tokens_in=estimate_tokens(request.system + request.prompt),
            tokens_out=estimate_tokens(text),
            model=model,
        )

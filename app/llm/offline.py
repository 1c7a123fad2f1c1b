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
from collections.abc import Callable
from typing import Any

import msgspec

from app.llm.base import ModelRequest, ModelResponse, OnDelta, PermanentModelError, TransientModelError

_DIRECTIVE = re.compile(r"\[\[offline:(\w+)(?:=([^\]]*))?\]\]")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9-]{3,}")
_STOP = frozenset(
    (
        "that this with from have will should would could their them they into your about which when what where "
        "make build write create using need needs want wants must also than then each every some more most"
    ).split()
)
_encoder = msgspec.json.Encoder()


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _topic(instructions: str, context: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """A short subject line and the salient words of the task, in order of first appearance."""
    plain = _DIRECTIVE.sub("", instructions).strip()
    words: list[str] = []
    for word in _WORD.findall(plain + " " + " ".join(str(item.get("title", "")) for item in context)):
        lower = word.lower()
        if lower not in _STOP and lower not in words:
            words.append(lower)
    subject = plain.splitlines()[0][:120] if plain else "the product"
    return subject or "the product", words[:12] or ["product"]


def _slug(word: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", word.lower()).strip("_") or "item"


def _specification(subject: str, words: list[str], _context: list[dict[str, Any]]) -> dict[str, Any]:
    features = words[:5]
    return {
        "vision": f"Deliver {subject} so that its users reach their goal quickly and reliably.",
        "personas": [
            {"name": "Primary user", "description": f"Uses {subject} every day.", "needs": features[:3]},
            {"name": "Administrator", "description": "Keeps the system healthy.", "needs": ["monitoring"]},
        ],
        "business_requirements": [
            {"id": f"BR-{index + 1}", "description": f"The system supports {word}.", "priority": "must"}
            for index, word in enumerate(features)
        ],
        "feature_map": [
            {"name": word.capitalize(), "description": f"Everything about {word}.", "requirement_ids": [f"BR-{i + 1}"]}
            for i, word in enumerate(features)
        ],
        "success_criteria": [f"A user completes the main {features[0]} flow in under a minute."],
        "open_questions": [],
    }


def _plan(subject: str, words: list[str], _context: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "goals": [f"Ship a first version of {subject}."],
        "milestones": [
            {"name": phase, "description": f"{phase} for {subject}.", "deliverables": [f"{phase.lower()} document"]}
            for phase in ("Discovery", "Design", "Build", "Launch")
        ],
        "risks": [f"Scope of {words[0]} grows during the build."],
    }


def _architecture(subject: str, words: list[str], _context: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "overview": f"A web API with a relational database serves {subject}.",
        "components": [
            {"name": "api", "responsibility": "HTTP API and validation", "technology": "Python"},
            {"name": "database", "responsibility": "persistent state", "technology": "PostgreSQL"},
        ],
        "api_spec": [
            {"method": "GET", "path": f"/{_slug(word)}s", "description": f"List {word} records."} for word in words[:3]
        ],
        "data_model": [{"name": word.capitalize(), "fields": ["id", "name", "created_at"]} for word in words[:3]],
        "risks": [{"description": "Load above expectations", "severity": "medium", "mitigation": "Scale out the api."}],
    }


def _implementation_plan(subject: str, words: list[str], _context: list[dict[str, Any]]) -> dict[str, Any]:
    tasks = [{"id": "T-1", "title": "Project skeleton", "description": f"Set up {subject}.", "estimate_hours": 2.0}]
    for index, word in enumerate(words[:4], start=2):
        tasks.append(
            {
                "id": f"T-{index}",
                "title": f"Implement {word}",
                "description": f"Model, API and tests for {word}.",
                "depends_on": ["T-1"],
                "estimate_hours": 4.0,
            }
        )
    return {"tasks": tasks}


def _source_code(subject: str, words: list[str], _context: list[dict[str, Any]]) -> dict[str, Any]:
    modules = [_slug(word) for word in words[:3]]
    return {
        "files": [
            {
                "path": f"app/{module}.py",
                "language": "python",
                "content": f'"""{module}: part of {subject}."""\n\n\n'
                f"def list_{module}() -> list[str]:\n    return []\n",
            }
            for module in modules
        ],
        "tests": [
            {
                "path": f"tests/test_{module}.py",
                "language": "python",
                "content": f"from app.{module} import list_{module}\n\n\ndef test_empty() -> None:\n"
                f"    assert list_{module}() == []\n",
            }
            for module in modules
        ],
        "dependencies": ["pytest"],
        "notes": f"Generated offline for {subject}.",
    }


def _test_results(subject: str, words: list[str], _context: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "test_plan": f"Exercise every feature of {subject} through its API.",
        "cases": [
            {
                "id": f"TC-{index + 1}",
                "title": f"{word} works",
                "steps": [f"Call the {word} endpoint"],
                "expected": "200 with a list",
                "status": "passed",
            }
            for index, word in enumerate(words[:4])
        ],
        "defects": [],
        "summary": "All planned cases passed.",
    }


def _deployment_package(subject: str, _words: list[str], _context: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "container_files": [
            {
                "path": "Containerfile",
                "language": "dockerfile",
                "content": 'FROM python:3.12-slim\nCOPY . /app\nUSER 10001\nCMD ["python", "-m", "app"]\n',
            }
        ],
        "run_files": [{"path": "compose.yaml", "language": "yaml", "content": "services:\n  app:\n    build: .\n"}],
        "environment": [{"name": "DATABASE_URL", "description": f"Database of {subject}.", "required": True}],
        "health_checks": ["GET /health answers 200"],
        "rollback_steps": ["Redeploy the previous image tag", "Run the down migration if the schema changed"],
    }


def _deployment_log(subject: str, _words: list[str], _context: list[dict[str, Any]]) -> dict[str, Any]:
    return {"steps": [f"Build the image of {subject}", "Run migrations", "Start the service"], "outcome": "planned"}


def _agent_output(subject: str, words: list[str], _context: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "summary": f"Plan for {subject}.",
        "plan": ["analyst: requirements", "architect: design", "coder: build", "tester: validate", "deployer: launch"],
        "routed_to": ["analyst"],
        "answer": f"The team will work on {subject}, starting with {words[0]}.",
    }


WRITERS: dict[str, Callable[[str, list[str], list[dict[str, Any]]], dict[str, Any]]] = {
    "software_specification": _specification,
    "project_plan": _plan,
    "system_architecture": _architecture,
    "implementation_plan": _implementation_plan,
    "source_code": _source_code,
    "test_results": _test_results,
    "deployment_package": _deployment_package,
    "deployment_log": _deployment_log,
    "agent_output": _agent_output,
}


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
        context: list[dict[str, Any]] = list(hints.get("context", []))
        subject, words = _topic(instructions, context)
        if hints.get("feedback"):
            subject = f"{subject} (revised: {str(hints['feedback'])[:80]})"
        artifacts = [
            {"artifact_type": kind, "title": f"{kind.replace('_', ' ').capitalize()}: {subject}"[:300]}
            | {"content": WRITERS[kind](subject, words, context)}
            for kind in hints.get("artifact_types", ["agent_output"])
        ]
        answer: dict[str, Any] = {
            "summary": f"{hints.get('agent_type', 'agent')} finished: {subject}",
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
                    "evidence": [f"Seen while working on: {subject}"],
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

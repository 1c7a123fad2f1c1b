"""The workflow as a graph: its phases in order, the gates between them, and which step may go next.

Pure functions of the definition and the state handed in; nothing here reads the database.
"""

from __future__ import annotations

from typing import Any

import msgspec

from app.bmad.loader import Workflow, WorkflowStep
from app.projects.models import OversightLevel
from app.workflows.context import depends_on

GATED_PHASES: dict[str, frozenset[str]] = {
    OversightLevel.HIGH.value: frozenset({"discovery", "plan", "design", "build", "validate", "launch"}),
    OversightLevel.MEDIUM.value: frozenset({"design", "build", "launch"}),
    OversightLevel.LOW.value: frozenset(),
}
ASK = "ask"  # a decision: put the step's condition to a human


def phase_stages(workflow: Workflow) -> list[list[WorkflowStep]]:
    """The sequence cut where the phase changes: stages run one after the other."""
    stages: list[list[WorkflowStep]] = []
    for step in workflow.steps:
        if stages and stages[-1][0].phase == step.phase:
            stages[-1].append(step)
        else:
            stages.append([step])
    return stages


def stage_keys(stages: list[list[WorkflowStep]]) -> list[str]:
    """Each stage's gate key: its phase, with `#n` from the phase's second occurrence on."""
    seen: dict[str, int] = {}
    keys = []
    for stage in stages:
        phase = stage[0].phase
        seen[phase] = seen.get(phase, 0) + 1
        keys.append(phase if seen[phase] == 1 else f"{phase}#{seen[phase]}")
    return keys


def stage_of(workflow: Workflow, key: str) -> list[WorkflowStep]:
    """The stage whose gate key is `key` (none: no steps)."""
    stages = phase_stages(workflow)
    return next((stage for stage, name in zip(stages, stage_keys(stages), strict=True) if name == key), [])


def phase_of(key: str) -> str:
    return key.split("#")[0]


def is_gated(oversight_level: str, phase: str) -> bool:
    return phase in GATED_PHASES.get(oversight_level, frozenset())


def may_start(step: WorkflowStep, unfinished: list[WorkflowStep], variables: dict[str, Any]) -> bool:
    """Whether a pending step may start beside the unfinished earlier steps of its phase.

    It waits for those it depends on; a step with effects outside the server waits for all of
    them; and a condition no one has set yet waits for them too, since any of them may set it.
    """
    if not unfinished:
        return True
    if step.side_effects or (step.condition and step.condition not in variables):
        return False
    return not any(depends_on(step, earlier) for earlier in unfinished)


def decide(
    step: WorkflowStep, *, oversight_level: str, include_optional: list[str], variables: dict[str, Any]
) -> str | None:
    """None: run the step; ASK: ask a human about its condition; else why it is skipped."""
    if step.agent_type is None:
        return f"no agent of ours runs {step.agent or step.step!r}"
    high = oversight_level == OversightLevel.HIGH.value
    if step.optional and str(step.index) not in set(include_optional) and not high:
        return "optional step not requested"
    if step.condition:
        flag = variables.get(step.condition)
        if flag is None:
            return ASK if high else f"condition {step.condition!r} is not set"
        if flag is not True:
            return f"condition {step.condition!r} is false"
    return None


def work_of(step: WorkflowStep) -> str:
    """What a step does, in words: `create story`, `update prd.md (if needed)`, `validate all_artifacts`."""
    if step.action:
        return step.action.replace("_", " ")
    if step.creates:
        return "create " + ", ".join(step.creates)
    if step.updates:
        return "update " + ", ".join(step.updates)
    if step.validates:
        return "validate " + step.validates
    return (step.step or "its work").replace("_", " ")


def instructions(workflow: Workflow, step: WorkflowStep, idea: str) -> str:
    what = work_of(step)
    return "\n".join(
        part
        for part in (
            f"{workflow.name}, step {step.index + 1} of {len(workflow.steps)} ({step.phase} phase): {what}.",
            step.notes or "",
            f"Product idea: {idea}" if idea else "",
        )
        if part
    )


def handing_over(workflow: Workflow, step: WorkflowStep, completed: set[int]) -> str:
    """The agent of the last completed step before this one: who hands the work over."""
    for earlier in reversed(workflow.steps[: step.index]):
        if earlier.agent_type is not None and earlier.index in completed:
            return earlier.agent_type.value
    return "orchestrator"


def item_label(item: Any) -> str | None:
    """A run's item in words (at most 300 characters)."""
    if item is None:
        return None
    if isinstance(item, dict):
        name = item.get("title") or item.get("name") or item.get("summary")
        ident = item.get("id")
        text = f"{ident}: {name}" if ident and name else str(name or ident or msgspec.json.encode(item).decode())
    else:
        text = str(item)
    return text[:300]


def item_text(instructions: str, item: Any, number: int, total: int) -> str:
    if item is None:
        return instructions
    body = item if isinstance(item, str) else msgspec.json.encode(item).decode()
    return f"{instructions}\nThis run is item {number} of {total}; do only this one: {body[:4000]}"

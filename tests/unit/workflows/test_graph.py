"""The workflow as a graph: stages, gate keys, which step may start, and what is decided about it."""

from __future__ import annotations

from typing import Any

import pytest

from app.bmad.loader import Workflow, WorkflowStep
from app.tasks.models import AgentType
from app.workflows.context import cycle_note, cycle_repeats, repeats_of
from app.workflows.graph import (
    ASK,
    decide,
    handing_over,
    is_gated,
    item_label,
    may_start,
    phase_of,
    phase_stages,
    stage_keys,
    stage_of,
)


def step(index: int, phase: str, agent: AgentType | None = AgentType.ANALYST, **fields: Any) -> WorkflowStep:
    return WorkflowStep(
        index=index, agent=agent.value if agent else "ux-expert", agent_type=agent, phase=phase, **fields
    )


def workflow(*steps: WorkflowStep) -> Workflow:
    return Workflow(id="w", name="W", description="", type=None, project_types=[], steps=list(steps), source="test")


def test_stages_cut_where_the_phase_changes_and_a_recurring_phase_gets_its_own_key() -> None:
    flow = workflow(step(0, "plan"), step(1, "plan"), step(2, "design"), step(3, "plan"), step(4, "design"))
    stages = phase_stages(flow)
    assert [[s.index for s in stage] for stage in stages] == [[0, 1], [2], [3], [4]]
    assert stage_keys(stages) == ["plan", "design", "plan#2", "design#2"]
    assert [s.index for s in stage_of(flow, "plan#2")] == [3]
    assert stage_of(flow, "launch") == []
    assert phase_of("design#2") == "design"


@pytest.mark.parametrize(
    ("oversight", "phase", "gated"),
    [("high", "discovery", True), ("medium", "discovery", False), ("medium", "build", True), ("low", "launch", False)],
)
def test_which_phases_are_gated(oversight: str, phase: str, gated: bool) -> None:
    assert is_gated(oversight, phase) is gated


def test_a_step_waits_for_the_unfinished_steps_it_depends_on() -> None:
    prd = step(0, "plan", creates=["prd.md"])
    architecture = step(1, "plan", AgentType.ARCHITECT, requires=["prd.md"], creates=["architecture.md"])
    unrelated = step(2, "plan", AgentType.TESTER, creates=["test_results"])
    deploy = step(3, "plan", AgentType.DEPLOYER, side_effects=True)
    conditional = step(4, "plan", condition="needs_tests")
    assert may_start(prd, [], {})
    assert not may_start(architecture, [prd], {})
    assert may_start(unrelated, [prd], {})
    assert not may_start(deploy, [unrelated], {})  # effects outside the server wait for everything
    assert not may_start(conditional, [unrelated], {})  # any earlier step may still set the flag
    assert may_start(conditional, [unrelated], {"needs_tests": True})


@pytest.mark.parametrize(
    ("fields", "oversight", "variables", "decision"),
    [
        ({}, "low", {}, None),
        ({"optional": True}, "low", {}, "optional step not requested"),
        ({"optional": True}, "high", {}, None),
        ({"condition": "ui"}, "medium", {}, "condition 'ui' is not set"),
        ({"condition": "ui"}, "high", {}, ASK),
        ({"condition": "ui"}, "low", {"ui": False}, "condition 'ui' is false"),
        ({"condition": "ui"}, "low", {"ui": True}, None),
    ],
)
def test_decide(fields: dict[str, Any], oversight: str, variables: dict[str, Any], decision: str | None) -> None:
    assert (
        decide(step(1, "plan", **fields), oversight_level=oversight, include_optional=[], variables=variables)
        == decision
    )


def test_decide_runs_a_requested_optional_step_and_skips_what_no_agent_of_ours_runs() -> None:
    optional = step(1, "plan", optional=True)
    assert decide(optional, oversight_level="low", include_optional=["1"], variables={}) is None
    nobody = step(2, "plan", agent=None)
    assert (
        decide(nobody, oversight_level="low", include_optional=[], variables={}) == "no agent of ours runs 'ux-expert'"
    )


def test_the_handover_comes_from_the_last_completed_step_before() -> None:
    flow = workflow(step(0, "plan"), step(1, "plan", AgentType.ARCHITECT), step(2, "build", AgentType.CODER))
    assert handing_over(flow, flow.steps[2], completed={0, 1}) == "architect"
    assert handing_over(flow, flow.steps[2], completed={0}) == "analyst"
    assert handing_over(flow, flow.steps[0], completed=set()) == "orchestrator"


def test_item_labels() -> None:
    assert item_label(None) is None
    assert item_label({"id": "E1", "title": "Login"}) == "E1: Login"
    assert item_label({"x": 1}) == '{"x":1}'
    assert item_label("a" * 400) == "a" * 300


def test_the_development_cycle_marker_repeats_its_dev_steps_per_story_then_per_code() -> None:
    """BMAD's `repeat_development_cycle` (continue_for_all_stories): the dev step that implements a
    story runs once per story, the one that fixes code once per code; QA and the steps before the
    stories are written keep their own repeats (none)."""
    flow = workflow(
        step(0, "build", AgentType.CODER, creates=["implementation_files"], requires=["prd.md"]),
        step(1, "plan", AgentType.ORCHESTRATOR, creates=["story.md"], repeats="for_each_epic"),
        step(2, "build", AgentType.CODER, action="implement_story", requires=["story.md"]),
        step(3, "validate", AgentType.TESTER, action="review_implementation", requires=["implementation_files"]),
        step(4, "build", AgentType.CODER, action="address_qa_feedback", updates=["implementation_files"]),
        step(5, "build", None, step="repeat_development_cycle", action="continue_for_all_stories"),
    )
    assert cycle_repeats(flow) == {2: "for_each_story", 4: "for_each_source_code"}
    assert [repeats_of(flow, s) for s in flow.steps] == [
        None,
        "for_each_epic",
        "for_each_story",
        None,
        "for_each_source_code",
        None,
    ]
    assert cycle_note(flow, flow.steps[5]) == (
        "the development cycle repeats as its dev steps do: implement_story runs for each story, "
        "address_qa_feedback runs for each source code"
    )
    assert cycle_note(flow, flow.steps[2]) is None
    # Without the marker, nothing repeats that does not say so.
    assert cycle_repeats(workflow(*flow.steps[:5])) == {}

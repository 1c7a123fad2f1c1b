"""What a request holds up: a kind and a reference, shown to clients as the `step_id` they knew."""

from __future__ import annotations

import uuid

import pytest

from app.hitl.models import HitlRequest, HoldKind, HoldRef


@pytest.mark.parametrize(
    ("hold", "label"),
    [
        (HoldRef(HoldKind.GATE, "design#2"), "gate:design#2"),
        (HoldRef(HoldKind.CONDITION, "3"), "condition:3"),
        (HoldRef(HoldKind.INTERRUPTED, "5"), "interrupted:5"),
        (HoldRef(HoldKind.REVIEW, "completed"), "review:completed"),
        (HoldRef(HoldKind.STEP, "4"), "4"),
    ],
)
def test_label(hold: HoldRef, label: str) -> None:
    assert hold.label == label


def test_a_request_stores_its_hold_in_two_columns() -> None:
    request = HitlRequest(project_id=uuid.uuid4(), kind="manual", question="?")
    assert request.hold is None
    request.hold = HoldRef(HoldKind.GATE, "plan")
    assert (request.hold_kind, request.hold_ref) == ("gate", "plan")
    assert request.hold == HoldRef(HoldKind.GATE, "plan")
    request.hold = HoldRef.of_step(None)
    assert (request.hold_kind, request.hold_ref) == (None, None)
    assert HoldRef.of_step("7") == HoldRef(HoldKind.STEP, "7")

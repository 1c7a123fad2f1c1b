"""The HITL request's table of moves."""

from __future__ import annotations

import uuid

import pytest

from app.core.states import IllegalTransition
from app.hitl.models import HitlRequest, HitlStatus
from app.hitl.state import HITL_MOVES, move


def test_a_request_is_answered_expired_or_cancelled_once() -> None:
    assert HITL_MOVES.moves[HitlStatus.PENDING] == set(HitlStatus) - {HitlStatus.PENDING}
    assert all(HITL_MOVES.terminal(status) for status in HitlStatus if status != HitlStatus.PENDING)


def test_move_changes_a_pending_request_and_refuses_to_change_an_answered_one() -> None:
    request = HitlRequest(project_id=uuid.uuid4(), kind="manual", question="?", status=HitlStatus.PENDING.value)
    move(request, HitlStatus.APPROVED)
    assert request.status == "approved"
    with pytest.raises(IllegalTransition, match="approved cannot become expired"):
        move(request, HitlStatus.EXPIRED)
    assert request.status == "approved"

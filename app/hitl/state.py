"""A HITL request's one table of moves: pending until answered, expired or cancelled; then final."""

from __future__ import annotations

from app.core.states import Transitions
from app.hitl.models import HitlRequest, HitlStatus

HITL_MOVES = Transitions[HitlStatus](
    "hitl request",
    {
        HitlStatus.PENDING: frozenset(
            {HitlStatus.APPROVED, HitlStatus.REJECTED, HitlStatus.AMENDED, HitlStatus.EXPIRED, HitlStatus.CANCELLED}
        ),
        # An expired request is asked again as a new request; an escalated one keeps its status.
        HitlStatus.APPROVED: frozenset(),
        HitlStatus.REJECTED: frozenset(),
        HitlStatus.AMENDED: frozenset(),
        HitlStatus.EXPIRED: frozenset(),
        HitlStatus.CANCELLED: frozenset(),
    },
)


def move(request: HitlRequest, status: HitlStatus) -> None:
    """The one place a request's status changes."""
    request.status = HITL_MOVES.check(HitlStatus(request.status), status).value

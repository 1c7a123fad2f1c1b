"""The task's table of moves."""

from __future__ import annotations

import pytest

from app.tasks.models import TERMINAL_TASK_STATUSES, TaskStatus
from app.tasks.state import TASK_MOVES


def test_every_status_has_a_row_and_the_final_ones_have_no_way_out() -> None:
    assert set(TASK_MOVES.moves) == set(TaskStatus)
    assert {status for status in TaskStatus if TASK_MOVES.terminal(status)} == TERMINAL_TASK_STATUSES


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (TaskStatus.PENDING, TaskStatus.QUEUED, True),
        (TaskStatus.QUEUED, TaskStatus.PENDING, True),  # the broker refused the job
        (TaskStatus.WORKING, TaskStatus.QUEUED, True),  # handed back, or its worker died
        (TaskStatus.WORKING, TaskStatus.PENDING, True),  # emergency stop
        (TaskStatus.WAITING_FOR_HITL, TaskStatus.PENDING, True),  # another attempt allowed
        (TaskStatus.WAITING_FOR_HITL, TaskStatus.WORKING, False),  # it is queued first
        (TaskStatus.PENDING, TaskStatus.COMPLETED, False),  # only an attempt completes
        (TaskStatus.FAILED, TaskStatus.PENDING, False),  # a redo is a new task
        (TaskStatus.COMPLETED, TaskStatus.CANCELLED, False),
    ],
)
def test_task_moves(current: TaskStatus, target: TaskStatus, allowed: bool) -> None:
    assert TASK_MOVES.allows(current, target) is allowed

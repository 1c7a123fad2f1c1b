"""A task's one table of moves. `TaskService._transition` checks every change against it.

Pending and queued wait for a worker; working is one attempt under a lease; waiting_for_hitl is
parked on a human. A working task goes back to queued (handed back, or its worker died) or pending
(halted by an emergency stop). Completed, failed and cancelled are final: a redo is a new task.
"""

from __future__ import annotations

from app.core.states import Transitions
from app.tasks.models import TaskStatus

TASK_MOVES = Transitions[TaskStatus](
    "task",
    {
        TaskStatus.PENDING: frozenset(
            {TaskStatus.QUEUED, TaskStatus.WORKING, TaskStatus.WAITING_FOR_HITL, TaskStatus.CANCELLED}
        ),
        # Back to pending: the broker refused the job.
        TaskStatus.QUEUED: frozenset(
            {TaskStatus.PENDING, TaskStatus.WORKING, TaskStatus.WAITING_FOR_HITL, TaskStatus.CANCELLED}
        ),
        TaskStatus.WORKING: frozenset(
            {
                TaskStatus.QUEUED,
                TaskStatus.PENDING,
                TaskStatus.WAITING_FOR_HITL,
                TaskStatus.COMPLETED,
                TaskStatus.FAILED,
                TaskStatus.CANCELLED,
            }
        ),
        # Pending again: a human allowed another attempt, or released a hold.
        TaskStatus.WAITING_FOR_HITL: frozenset(
            {TaskStatus.PENDING, TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
        ),
        TaskStatus.COMPLETED: frozenset(),
        TaskStatus.FAILED: frozenset(),
        TaskStatus.CANCELLED: frozenset(),
    },
)

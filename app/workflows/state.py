"""An execution's state, typed: its steps, their runs, its gates and flags, and their tables of moves.

The row keeps JSON (`workflow_execution.step_state`, `.control`); these Structs are what the code
reads and writes, converted at the edge (`msgspec.convert` in, `msgspec.to_builtins` out). Every
change of a status goes through its machine's table (`app.core.states.Transitions`), so an illegal
move raises instead of leaving a state nothing expects. JSON columns are saved when the attribute
is assigned a new object, not when an object it holds changes in place: the setters assign anew.
"""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import msgspec

from app.core.states import Transitions
from app.workflows.models import ExecutionStatus, WorkflowExecution


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_FOR_HITL = "waiting_for_hitl"  # a run waits for a human, or its condition was put to one
    COMPLETED = "completed"
    SKIPPED = "skipped"
    FAILED = "failed"


class RunStatus(StrEnum):
    """One run of a step: one task."""

    RUNNING = "running"
    WAITING_FOR_HITL = "waiting_for_hitl"
    COMPLETED = "completed"
    FAILED = "failed"


class GateStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"


EXECUTION_MOVES = Transitions[ExecutionStatus](
    "execution",
    {
        ExecutionStatus.RUNNING: frozenset(
            {
                ExecutionStatus.WAITING_FOR_HITL,
                ExecutionStatus.PAUSED,
                ExecutionStatus.COMPLETED,
                ExecutionStatus.FAILED,
                ExecutionStatus.CANCELLED,
            }
        ),
        ExecutionStatus.WAITING_FOR_HITL: frozenset(
            {
                ExecutionStatus.RUNNING,
                ExecutionStatus.PAUSED,
                ExecutionStatus.COMPLETED,
                ExecutionStatus.FAILED,
                ExecutionStatus.CANCELLED,
            }
        ),
        # Resumed to where it was; a step of it may still fail, and it may be cancelled.
        ExecutionStatus.PAUSED: frozenset(
            {
                ExecutionStatus.RUNNING,
                ExecutionStatus.WAITING_FOR_HITL,
                ExecutionStatus.FAILED,
                ExecutionStatus.CANCELLED,
            }
        ),
        ExecutionStatus.COMPLETED: frozenset(),
        ExecutionStatus.FAILED: frozenset(),
        ExecutionStatus.CANCELLED: frozenset(),
    },
)
STEP_MOVES = Transitions[StepStatus](
    "workflow step",
    {
        # Started, skipped, or its condition put to a human.
        StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED, StepStatus.WAITING_FOR_HITL}),
        StepStatus.RUNNING: frozenset({StepStatus.WAITING_FOR_HITL, StepStatus.COMPLETED, StepStatus.FAILED}),
        # Back to pending: its condition was answered.
        StepStatus.WAITING_FOR_HITL: frozenset(
            {StepStatus.PENDING, StepStatus.RUNNING, StepStatus.COMPLETED, StepStatus.FAILED}
        ),
        StepStatus.COMPLETED: frozenset({StepStatus.PENDING}),  # its phase is redone after a rejected gate
        StepStatus.SKIPPED: frozenset(),
        StepStatus.FAILED: frozenset(),
    },
)
RUN_MOVES = Transitions[RunStatus](
    "step run",
    {
        RunStatus.RUNNING: frozenset({RunStatus.WAITING_FOR_HITL, RunStatus.COMPLETED, RunStatus.FAILED}),
        # Running again: rerun after an interruption, released from a hold, or redone by a new task.
        RunStatus.WAITING_FOR_HITL: frozenset({RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.FAILED}),
        RunStatus.COMPLETED: frozenset(),
        RunStatus.FAILED: frozenset(),
    },
)
GATE_MOVES = Transitions[GateStatus]("phase gate", {GateStatus.PENDING: frozenset({GateStatus.APPROVED})})

OPEN = frozenset({ExecutionStatus.RUNNING, ExecutionStatus.WAITING_FOR_HITL, ExecutionStatus.PAUSED})
ACTIVE = frozenset({ExecutionStatus.RUNNING, ExecutionStatus.WAITING_FOR_HITL})  # advancing, not paused
DONE = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED})
UNFINISHED_RUNS = frozenset({RunStatus.RUNNING, RunStatus.WAITING_FOR_HITL})


class RunState(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    task_id: UUID
    status: RunStatus
    item: str | None = None  # the item of a step that `repeats`, in words
    redo_of: UUID | None = None  # the task whose rejected result this run redoes


class StepState(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    status: StepStatus
    runs: list[RunState] = msgspec.field(default_factory=list)
    # The earlier runs of a step whose phase was redone (their artifacts stay).
    previous_runs: list[RunState] = msgspec.field(default_factory=list)
    feedback: str | None = None  # a human's comment on the phase being redone
    reason: str | None = None  # why it was skipped, or a note on how it runs
    request_id: UUID | None = None  # the question about its condition, waiting for a human
    missing_inputs: list[str] = msgspec.field(default_factory=list)
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    # Executions stored before `runs` existed name their one task here.
    task_id: UUID | None = None

    def all_runs(self) -> list[RunState]:
        if self.runs or self.task_id is None:
            return list(self.runs)
        legacy = {status.value for status in RunStatus}
        status = RunStatus(self.status.value) if self.status.value in legacy else RunStatus.COMPLETED
        return [RunState(task_id=self.task_id, status=status)]


PENDING_STEP = StepState(status=StepStatus.PENDING)


class Gate(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The human approval between two phases, keyed by the phase (`#n` from its second occurrence on)."""

    status: GateStatus
    request_id: UUID | None = None
    phase: str | None = None


class ExecutionControl(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What the execution itself keeps beside the user's variables (`workflow_execution.control`)."""

    gates: dict[str, Gate] = msgspec.field(default_factory=dict)
    redos: dict[str, int] = msgspec.field(default_factory=dict)  # rejections of each gate so far
    reask: list[UUID] = msgspec.field(default_factory=list)  # expired requests to ask again on resume
    paused_from: ExecutionStatus | None = None
    stopped: bool = False  # paused by the project's emergency stop; resumed with the project


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# -- reading and writing the row -------------------------------------------------------------------


def step_state(execution: WorkflowExecution, index: int | str) -> StepState:
    raw = execution.step_state.get(str(index))
    return PENDING_STEP if raw is None else msgspec.convert(raw, StepState)


def step_states(execution: WorkflowExecution) -> dict[int, StepState]:
    return {int(index): msgspec.convert(raw, StepState) for index, raw in execution.step_state.items()}


def initial_step_state(step_count: int) -> dict[str, Any]:
    return {str(index): msgspec.to_builtins(PENDING_STEP) for index in range(step_count)}


def set_step(execution: WorkflowExecution, index: int | str, state: StepState) -> None:
    """Store a step's new state; its status must be a legal move from the stored one."""
    STEP_MOVES.check(step_state(execution, index).status, state.status)
    execution.step_state = {**execution.step_state, str(index): msgspec.to_builtins(state)}


def control_of(execution: WorkflowExecution) -> ExecutionControl:
    return msgspec.convert(execution.control or {}, ExecutionControl)


def set_control(execution: WorkflowExecution, control: ExecutionControl) -> None:
    execution.control = msgspec.to_builtins(control)


def move(execution: WorkflowExecution, status: ExecutionStatus) -> None:
    """The one place an execution's status changes."""
    execution.status = EXECUTION_MOVES.check(ExecutionStatus(execution.status), status).value


def is_active(execution: WorkflowExecution) -> bool:
    return ExecutionStatus(execution.status) in ACTIVE


# -- derived state ---------------------------------------------------------------------------------


def step_status(runs: list[RunState]) -> StepStatus:
    """A step with runs: failed if any failed, else running while any runs, else waiting if any waits."""
    statuses = {run.status for run in runs}
    if RunStatus.FAILED in statuses:
        return StepStatus.FAILED
    if RunStatus.RUNNING in statuses:
        return StepStatus.RUNNING
    if RunStatus.WAITING_FOR_HITL in statuses:
        return StepStatus.WAITING_FOR_HITL
    return StepStatus.COMPLETED


def with_run_status(state: StepState, task_id: UUID, status: RunStatus, /, **changes: Any) -> StepState:
    """The step after its run of `task_id` moved to `status` (checked); its own status follows its runs."""
    runs = [
        msgspec.structs.replace(run, status=RUN_MOVES.check(run.status, status), **changes)
        if run.task_id == task_id
        else run
        for run in state.all_runs()
    ]
    return msgspec.structs.replace(state, runs=runs, status=step_status(runs), task_id=None)


def open_task_ids(execution: WorkflowExecution) -> list[UUID]:
    return [
        run.task_id
        for state in step_states(execution).values()
        for run in state.all_runs()
        if run.status in UNFINISHED_RUNS
    ]


def settle(execution: WorkflowExecution) -> None:
    """Running while any step runs; waiting for a human when all that is left waits for one."""
    if not is_active(execution):
        return
    states = step_states(execution)
    active = sorted(
        index for index, state in states.items() if state.status in (StepStatus.RUNNING, StepStatus.WAITING_FOR_HITL)
    )
    execution.current_step = str(active[0]) if active else None
    waiting = bool(active) and all(states[index].status == StepStatus.WAITING_FOR_HITL for index in active)
    move(execution, ExecutionStatus.WAITING_FOR_HITL if waiting else ExecutionStatus.RUNNING)

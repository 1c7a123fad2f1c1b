"""The execution's typed state and its tables of moves: no database, plain rows in memory."""

from __future__ import annotations

import uuid

import pytest

from app.core.states import IllegalTransition
from app.workflows.models import ExecutionStatus, WorkflowExecution
from app.workflows.state import (
    EXECUTION_MOVES,
    GATE_MOVES,
    RUN_MOVES,
    STEP_MOVES,
    ExecutionControl,
    Gate,
    GateStatus,
    RunState,
    RunStatus,
    StepState,
    StepStatus,
    control_of,
    initial_step_state,
    move,
    open_task_ids,
    set_control,
    set_step,
    settle,
    step_state,
    step_status,
    with_run_status,
)


def new_execution(steps: int = 3, status: ExecutionStatus = ExecutionStatus.RUNNING) -> WorkflowExecution:
    return WorkflowExecution(
        project_id=uuid.uuid4(),
        workflow_id="w",
        definition={},
        status=status.value,
        step_state=initial_step_state(steps),
        variables={},
        control={},
        inputs={},
    )


@pytest.mark.parametrize("table", [EXECUTION_MOVES, STEP_MOVES, RUN_MOVES, GATE_MOVES])
def test_every_state_of_a_machine_has_a_row_and_every_move_ends_in_a_known_state(table: object) -> None:
    moves = table.moves  # type: ignore[attr-defined]
    states = set(next(iter(moves)).__class__)
    assert set(moves) <= states
    assert all(targets <= states for targets in moves.values())
    if table is not GATE_MOVES:  # an approved gate is removed, never moved
        assert set(moves) == states


def test_terminal_states_have_no_way_out() -> None:
    for status in (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
        assert EXECUTION_MOVES.terminal(status)
        assert not EXECUTION_MOVES.allows(status, ExecutionStatus.RUNNING)
    assert STEP_MOVES.terminal(StepStatus.SKIPPED)
    assert STEP_MOVES.terminal(StepStatus.FAILED)
    assert RUN_MOVES.terminal(RunStatus.COMPLETED)


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (ExecutionStatus.RUNNING, ExecutionStatus.PAUSED, True),
        (ExecutionStatus.PAUSED, ExecutionStatus.WAITING_FOR_HITL, True),  # resumed to where it was
        (ExecutionStatus.PAUSED, ExecutionStatus.COMPLETED, False),  # it must run to complete
        (ExecutionStatus.CANCELLED, ExecutionStatus.RUNNING, False),
        (ExecutionStatus.RUNNING, ExecutionStatus.RUNNING, True),  # staying is no move
    ],
)
def test_execution_moves(current: ExecutionStatus, target: ExecutionStatus, allowed: bool) -> None:
    assert EXECUTION_MOVES.allows(current, target) is allowed


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (StepStatus.PENDING, StepStatus.RUNNING, True),
        (StepStatus.PENDING, StepStatus.COMPLETED, False),  # a step completes through its runs
        (StepStatus.WAITING_FOR_HITL, StepStatus.PENDING, True),  # its condition was answered
        (StepStatus.COMPLETED, StepStatus.PENDING, True),  # its phase is redone
        (StepStatus.COMPLETED, StepStatus.RUNNING, False),
        (StepStatus.SKIPPED, StepStatus.PENDING, False),
    ],
)
def test_step_moves(current: StepStatus, target: StepStatus, allowed: bool) -> None:
    assert STEP_MOVES.allows(current, target) is allowed


def test_an_illegal_move_raises_and_changes_nothing() -> None:
    execution = new_execution(status=ExecutionStatus.COMPLETED)
    with pytest.raises(IllegalTransition, match="completed cannot become running") as raised:
        move(execution, ExecutionStatus.RUNNING)
    assert raised.value.status_code == 409
    assert execution.status == "completed"
    execution = new_execution()
    with pytest.raises(IllegalTransition):
        set_step(execution, 0, StepState(status=StepStatus.COMPLETED))
    assert step_state(execution, 0).status == StepStatus.PENDING


def test_a_step_follows_its_runs() -> None:
    one, two = uuid.uuid4(), uuid.uuid4()
    runs = [RunState(task_id=one, status=RunStatus.RUNNING), RunState(task_id=two, status=RunStatus.RUNNING)]
    state = StepState(status=StepStatus.RUNNING, runs=runs)
    state = with_run_status(state, one, RunStatus.WAITING_FOR_HITL)
    assert state.status == StepStatus.RUNNING  # the other still runs
    state = with_run_status(state, two, RunStatus.COMPLETED)
    assert state.status == StepStatus.WAITING_FOR_HITL
    state = with_run_status(state, one, RunStatus.COMPLETED)
    assert state.status == StepStatus.COMPLETED
    with pytest.raises(IllegalTransition):
        with_run_status(state, one, RunStatus.RUNNING)
    assert step_status([RunState(task_id=one, status=RunStatus.FAILED), *runs[1:]]) == StepStatus.FAILED


def test_a_run_redone_by_a_new_task_follows_it() -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    state = StepState(
        status=StepStatus.WAITING_FOR_HITL, runs=[RunState(task_id=old, status=RunStatus.WAITING_FOR_HITL)]
    )
    state = with_run_status(state, old, RunStatus.RUNNING, task_id=new, redo_of=old)
    assert state.runs == [RunState(task_id=new, status=RunStatus.RUNNING, redo_of=old)]
    assert state.status == StepStatus.RUNNING


def test_a_step_stored_before_runs_existed_reads_as_one_run() -> None:
    task_id = uuid.uuid4()
    execution = new_execution()
    execution.step_state = {
        "0": {"status": "running", "task_id": str(task_id), "started_at": "2026-12-01T10:00:00+00:00"}
    }
    state = step_state(execution, 0)
    assert state.all_runs() == [RunState(task_id=task_id, status=RunStatus.RUNNING)]
    assert state.started_at is not None
    assert state.started_at.isoformat() == "2026-12-01T10:00:00+00:00"
    assert open_task_ids(execution) == [task_id]


def test_settle_waits_for_a_human_only_when_every_active_step_does() -> None:
    execution = new_execution()
    ids = [uuid.uuid4(), uuid.uuid4()]
    for index, task_id in enumerate(ids):
        set_step(
            execution,
            index,
            StepState(status=StepStatus.RUNNING, runs=[RunState(task_id=task_id, status=RunStatus.RUNNING)]),
        )
    settle(execution)
    assert (execution.status, execution.current_step) == ("running", "0")
    set_step(execution, 0, StepState(status=StepStatus.WAITING_FOR_HITL))
    settle(execution)
    assert execution.status == "running"
    set_step(execution, 1, StepState(status=StepStatus.WAITING_FOR_HITL))
    settle(execution)
    assert execution.status == "waiting_for_hitl"
    move(execution, ExecutionStatus.PAUSED)
    settle(execution)  # a paused execution stays paused
    assert execution.status == "paused"


def test_the_control_is_stored_as_json_and_read_back_typed() -> None:
    execution = new_execution()
    assert control_of(execution) == ExecutionControl()
    request_id = uuid.uuid4()
    control = ExecutionControl(
        gates={"design": Gate(status=GateStatus.PENDING, request_id=request_id, phase="design")},
        redos={"plan": 1},
        paused_from=ExecutionStatus.WAITING_FOR_HITL,
        stopped=True,
    )
    set_control(execution, control)
    assert execution.control == {
        "gates": {"design": {"status": "pending", "request_id": str(request_id), "phase": "design"}},
        "redos": {"plan": 1},
        "paused_from": "waiting_for_hitl",
        "stopped": True,
    }
    assert control_of(execution) == control
    assert execution.variables == {}  # the user's variables hold none of it

"""Workflow executions: what a human's answer does to one, on top of its life (`execution.ExecutionCore`).

The package's pieces: `graph` (phases, gates, which step may go next), `state` (the typed state
and its tables of moves), `steps` (starting a step), `gates` (what is put to a human),
`context` (what a step reads), `execution` (start, advance, pause, resume, cancel), and here the
answers: a gate approved or rejected, a condition answered, an interrupted task allowed to run
again, a request escalated or expired.
"""

from __future__ import annotations

from uuid import UUID

from app.hitl.models import HitlRequest, HoldKind
from app.tasks.services import TaskService
from app.workflows.execution import ExecutionCore
from app.workflows.graph import phase_of
from app.workflows.models import ExecutionStatus, WorkflowExecution
from app.workflows.state import StepState, StepStatus, is_active, move, set_step, step_state

__all__ = ["ExecutionService"]


def _held(request: HitlRequest, kind: HoldKind) -> str | None:
    """Which gate, condition or step the request holds up, if it holds up one of `kind`."""
    hold = request.hold
    return hold.ref if hold is not None and hold.kind == kind else None


class ExecutionService(ExecutionCore):
    async def approve_gate(self, request: HitlRequest) -> list[UUID]:
        """A human approved a phase gate: the execution goes on."""
        key = _held(request, HoldKind.GATE)
        if request.workflow_execution_id is None or key is None:
            return []
        execution = await self.get(request.workflow_execution_id, lock=True)
        self.gates.approve(execution, key)
        if execution.status == ExecutionStatus.WAITING_FOR_HITL.value:
            move(execution, ExecutionStatus.RUNNING)
            await self.events.record(
                "workflow_resumed",
                project_id=execution.project_id,
                data={"execution_id": str(execution.id), "phase": phase_of(key)},
            )
        return await self.advance(execution)

    def gate_redos(self, execution: WorkflowExecution, key: str) -> int:
        return self.gates.redos(execution, key)

    async def redo_phase(self, request: HitlRequest, feedback: str, *, actor: str) -> list[UUID]:
        """A human rejected a phase gate: the stage's steps run again with the comment as feedback."""
        execution = await self.get(request.workflow_execution_id or UUID(int=0), lock=True)
        key = _held(request, HoldKind.GATE) or ""
        redone = self.gates.redo(execution, self.workflow_of(execution), key, feedback)
        if execution.status == ExecutionStatus.WAITING_FOR_HITL.value:
            move(execution, ExecutionStatus.RUNNING)
        await self.events.record(
            "workflow_phase_redone",
            project_id=execution.project_id,
            actor=actor,
            data={
                "execution_id": str(execution.id),
                "phase": phase_of(key),
                "steps": [step.index for step in redone],
                "feedback": feedback,
            },
        )
        return await self.advance(execution)

    async def repoint(self, old: HitlRequest, new: HitlRequest) -> None:
        """A request was escalated or asked again: the gate or condition it held up now waits on `new`."""
        if old.workflow_execution_id is None:
            return
        execution = await self.get(old.workflow_execution_id, lock=True)
        self.gates.repoint(execution, old, new)

    async def answer_condition(self, request: HitlRequest, *, run: bool, actor: str) -> list[UUID]:
        """A human said whether a step's condition holds: set the flag, then the step runs or is skipped."""
        execution = await self.get(request.workflow_execution_id or UUID(int=0), lock=True)
        index = _held(request, HoldKind.CONDITION) or ""
        step = self.workflow_of(execution).steps[int(index)]
        if step.condition is None or step_state(execution, index).request_id != request.id:
            return []
        execution.variables = {**execution.variables, step.condition: run}
        set_step(execution, index, StepState(status=StepStatus.PENDING))
        await self.events.record(
            "workflow_condition_set",
            project_id=execution.project_id,
            actor=actor,
            data={"execution_id": str(execution.id), "step": step.index, "condition": step.condition, "value": run},
        )
        return await self.advance(execution)

    async def on_hitl_answered(
        self, request: HitlRequest, action: str, *, actor: str, comment: str | None
    ) -> list[UUID]:
        """Route a human's answer to what the request holds up. Returns the tasks to enqueue after commit."""
        kind = request.hold.kind if request.hold is not None else None
        if kind == HoldKind.GATE:
            return await self.approve_gate(request)
        if kind == HoldKind.CONDITION:
            return await self.answer_condition(request, run=action == "approve", actor=actor)
        if kind == HoldKind.INTERRUPTED and request.task_id is not None:
            tasks = TaskService(session=self.session)
            if action == "approve":
                task = await tasks.rerun_parked(request.task_id, actor=actor)
                if task is None:
                    return []
                await self.on_task_finished(task)  # the run is running again
                return [task.id]
            reason = f"not run again after an interruption: {comment or 'declined by ' + actor}"
            failed = await tasks.fail_parked(request.task_id, reason)
            return await self.on_task_finished(failed) if failed is not None else []
        return []

    async def pause_on_expiry(self, request: HitlRequest) -> None:
        """An unanswered request expired with the `pause` action: its execution pauses until resumed,
        and resuming asks again."""
        if request.workflow_execution_id is None:
            return
        execution = await self.get(request.workflow_execution_id, lock=True)
        self.gates.ask_again_on_resume(execution, request)
        if is_active(execution):
            self._pause(execution)
            await self.events.record(
                "workflow_paused",
                project_id=execution.project_id,
                data={"execution_id": str(execution.id), "reason": "hitl_expired", "request_id": str(request.id)},
            )

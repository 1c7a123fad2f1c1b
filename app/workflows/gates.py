"""What a workflow puts to a human: the gate between two phases, a step's condition, and asking again.

A gate is keyed by its stage (the phase, `#n` from its second occurrence on) and kept in the
execution's control (`ExecutionControl.gates`); a rejected gate redoes its stage's steps with the
comment as feedback and counts the redo. Requests that expired while the execution paused are
asked again when it resumes. These change the execution's state only; the caller moves its status
and advances it.
"""

from __future__ import annotations

from uuid import UUID

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.artifacts.models import Artifact, Granularity
from app.bmad.loader import Workflow, WorkflowStep
from app.config import HitlSettings
from app.hitl.models import HitlKind, HitlRequest, HitlStatus, HoldKind, HoldRef, Urgency
from app.hitl.services import HitlService
from app.workflows.graph import phase_of, stage_of, work_of
from app.workflows.models import WorkflowExecution
from app.workflows.state import (
    GATE_MOVES,
    Gate,
    GateStatus,
    StepState,
    StepStatus,
    control_of,
    set_control,
    set_step,
    step_state,
)


class Gates:
    def __init__(self, session: AsyncSession, hitl: HitlSettings) -> None:
        self.session = session
        self.hitl = hitl

    # -- phase gates -------------------------------------------------------------------------

    async def pending(
        self, execution: WorkflowExecution, key: str, stage: list[WorkflowStep]
    ) -> tuple[HitlRequest | None, bool]:
        """The gate after the stage `key` unless approved: its request, and whether it was opened now."""
        gate = control_of(execution).gates.get(key)
        if gate is not None and gate.status == GateStatus.APPROVED:
            return None, False
        if gate is not None:
            return await self.session.get(HitlRequest, gate.request_id) if gate.request_id else None, False
        phase = phase_of(key)
        request = await HitlService(session=self.session).open_request(
            policy=self.hitl,
            project_id=execution.project_id,
            kind=HitlKind.PHASE_APPROVAL,
            question=(
                f"The {phase} phase is done. Approve to continue with the next phase, reject with a comment "
                "to have the phase redone with it, or amend one of its documents."
            ),
            artifact_ids=await self._stage_artifacts(execution, stage),
            workflow_execution_id=execution.id,
            hold=HoldRef(HoldKind.GATE, key),
            actor="workflow",
        )
        self._set_gate(execution, key, Gate(status=GateStatus.PENDING, request_id=request.id, phase=phase))
        return request, True

    def approve(self, execution: WorkflowExecution, key: str) -> None:
        gate = control_of(execution).gates.get(key) or Gate(status=GateStatus.PENDING)
        self._set_gate(execution, key, msgspec.structs.replace(gate, status=GateStatus.APPROVED))

    @staticmethod
    def redos(execution: WorkflowExecution, key: str) -> int:
        return control_of(execution).redos.get(key, 0)

    def redo(self, execution: WorkflowExecution, workflow: Workflow, key: str, feedback: str) -> list[WorkflowStep]:
        """A rejected gate: its stage's completed steps are pending again, with the feedback and their
        earlier runs (`previous_runs`); the gate is asked again once the redo is done. The steps redone."""
        redone = [
            step for step in stage_of(workflow, key) if step_state(execution, step.index).status == StepStatus.COMPLETED
        ]
        for step in redone:
            state = step_state(execution, step.index)
            history = [*state.previous_runs, *state.all_runs()]
            set_step(
                execution, step.index, StepState(status=StepStatus.PENDING, feedback=feedback, previous_runs=history)
            )
        control = control_of(execution)
        gates = {name: gate for name, gate in control.gates.items() if name != key}
        redos = {**control.redos, key: control.redos.get(key, 0) + 1}
        set_control(execution, msgspec.structs.replace(control, gates=gates, redos=redos))
        return redone

    def _set_gate(self, execution: WorkflowExecution, key: str, gate: Gate) -> None:
        control = control_of(execution)
        current = control.gates.get(key)
        if current is not None:
            GATE_MOVES.check(current.status, gate.status)
        set_control(execution, msgspec.structs.replace(control, gates={**control.gates, key: gate}))

    async def _stage_artifacts(self, execution: WorkflowExecution, stage: list[WorkflowStep]) -> list[UUID]:
        task_ids = [run.task_id for step in stage for run in step_state(execution, step.index).all_runs()]
        if not task_ids:
            return []
        statement = select(Artifact.id).where(
            Artifact.task_id.in_(task_ids), Artifact.granularity == Granularity.DOCUMENT.value
        )
        return list(await self.session.scalars(statement))

    # -- conditions ----------------------------------------------------------------------------

    async def ask_condition(self, execution: WorkflowExecution, step: WorkflowStep) -> None:
        """High oversight: a condition no agent has decided goes to the product owner."""
        request = await HitlService(session=self.session).open_request(
            policy=self.hitl,
            project_id=execution.project_id,
            kind=HitlKind.MANUAL,
            question=(
                f"Step {step.index + 1} ({step.agent}: {work_of(step)}) runs only if {step.condition!r}, and no "
                "agent has said whether it holds. Approve to run the step, reject to skip it."
            ),
            options=("approve", "reject"),
            workflow_execution_id=execution.id,
            hold=HoldRef(HoldKind.CONDITION, str(step.index)),
            actor="workflow",
        )
        set_step(
            execution,
            step.index,
            StepState(
                status=StepStatus.WAITING_FOR_HITL,
                reason=f"condition {step.condition!r} asked",
                request_id=request.id,
            ),
        )

    # -- requests asked again ------------------------------------------------------------------

    def repoint(self, execution: WorkflowExecution, old: HitlRequest, new: HitlRequest) -> None:
        """A request was escalated or asked again: the gate or condition it held up now waits on `new`."""
        hold = old.hold
        if hold is not None and hold.kind == HoldKind.GATE:
            gate = control_of(execution).gates.get(hold.ref)
            if gate is not None and gate.request_id == old.id:
                self._set_gate(execution, hold.ref, msgspec.structs.replace(gate, request_id=new.id))
        elif hold is not None and hold.kind == HoldKind.CONDITION:
            index = hold.ref
            state = step_state(execution, index)
            if state.request_id == old.id:
                set_step(execution, index, msgspec.structs.replace(state, request_id=new.id))

    def ask_again_on_resume(self, execution: WorkflowExecution, request: HitlRequest) -> None:
        control = control_of(execution)
        set_control(execution, msgspec.structs.replace(control, reask=[*control.reask, request.id]))

    async def reask(self, execution: WorkflowExecution) -> None:
        """Resumed after requests expired: each one still holding something up is asked again."""
        for request_id in control_of(execution).reask:
            old = await self.session.get(HitlRequest, request_id)
            if old is None or old.status != HitlStatus.EXPIRED.value:
                continue
            new = await HitlService(session=self.session).open_request(
                policy=self.hitl,
                project_id=old.project_id,
                kind=HitlKind(old.kind),
                question=old.question,
                task_id=old.task_id,
                options=old.options,
                artifact_ids=[UUID(value) for value in old.artifact_ids],
                urgency=Urgency(old.urgency),
                assigned_role=old.assigned_role,
                workflow_execution_id=old.workflow_execution_id,
                hold=old.hold,
                actor="workflow",
            )
            self.repoint(execution, old, new)
        set_control(execution, msgspec.structs.replace(control_of(execution), reask=[]))

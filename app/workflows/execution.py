"""Workflow executions: a durable state machine over a snapshot of a BMAD workflow.

All state is in the `workflow_execution` row (status, per-step state, control); nothing lives only
in memory, so any process can continue an execution. Every change happens in one transaction
with its events, under a lock on the execution's row. A step's completion is keyed by its task
id: a task redelivered after a crash finds its step already done and changes nothing. New tasks
are written `pending` in the same transaction and enqueued after commit (the sweep queues any
that a crash left behind).

Steps run one after the other, in the order of the definition. Between phases the execution
stops on a `phase_approval` gate when the project's oversight level asks for one (high: every
phase; medium: design, build and launch; low: none). The pieces: `graph` (which step goes next),
`state` (the typed state and its tables of moves), `steps` (starting a step), `gates` (what is
put to a human), `context` (what a step reads).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.artifacts.models import ArtifactType, Granularity
from app.artifacts.services import ArtifactService
from app.bmad.loader import BmadCore, Workflow, WorkflowStep
from app.config import HitlSettings
from app.core.exceptions import ConflictError, InvalidInputError, NotFoundError
from app.events.services import EventService
from app.hitl.models import HitlRequest, HitlStatus
from app.hitl.state import move as move_request
from app.projects.models import Project, ProjectStatus
from app.tasks.models import AgentTask, TaskStatus
from app.tasks.services import TaskService
from app.workflows.context import cycle_note, step_resources
from app.workflows.gates import Gates
from app.workflows.graph import ASK, decide, is_gated, may_start, phase_stages, stage_keys
from app.workflows.models import ExecutionStatus, WorkflowExecution
from app.workflows.state import (
    DONE,
    OPEN,
    RunStatus,
    StepState,
    StepStatus,
    control_of,
    initial_step_state,
    is_active,
    move,
    now,
    open_task_ids,
    set_control,
    set_step,
    settle,
    step_state,
    step_states,
    with_run_status,
)
from app.workflows.steps import RESOURCES_KEY, StepStarter

# A task's status as the status of its run.
RUN_OF_TASK = {
    TaskStatus.COMPLETED.value: RunStatus.COMPLETED,
    TaskStatus.WAITING_FOR_HITL.value: RunStatus.WAITING_FOR_HITL,
    TaskStatus.WORKING.value: RunStatus.RUNNING,
    TaskStatus.PENDING.value: RunStatus.RUNNING,
    TaskStatus.QUEUED.value: RunStatus.RUNNING,
}

# Every finished run of a step reads its execution this way: built once (building it and generating
# its cache key on each call cost as much as running it).
_LOCKED_WITH_PROJECT = (
    select(WorkflowExecution, Project)
    .outerjoin(Project, Project.id == WorkflowExecution.project_id)
    .where(WorkflowExecution.id == bindparam("id"))
    .with_for_update(of=WorkflowExecution)
)


class ExecutionCore:
    """An execution's life: start, advance step by step, record finished runs, pause, resume, cancel."""

    def __init__(self, session: AsyncSession, hitl: HitlSettings) -> None:
        self.session = session
        self.hitl = hitl
        self.events = EventService.of(session)
        self.gates = Gates(session, hitl)

    # -- reads -------------------------------------------------------------------------------

    async def get(self, execution_id: UUID, *, lock: bool = False) -> WorkflowExecution:
        statement = select(WorkflowExecution).where(WorkflowExecution.id == execution_id)
        if lock:
            statement = statement.with_for_update()
        execution: WorkflowExecution | None = await self.session.scalar(statement)
        if execution is None:
            raise NotFoundError(f"Execution {execution_id} does not exist.")
        return execution

    async def locked_with_project(self, execution_id: UUID) -> tuple[WorkflowExecution, Project | None]:
        """The execution, locked, and its project read (not locked) in the same statement: for an
        advance, which reads the project."""
        row = (await self.session.execute(_LOCKED_WITH_PROJECT, {"id": execution_id})).first()
        if row is None:
            raise NotFoundError(f"Execution {execution_id} does not exist.")
        return row[0], row[1]

    async def of_project(self, project_id: UUID) -> list[WorkflowExecution]:
        statement = (
            select(WorkflowExecution).where(WorkflowExecution.project_id == project_id).order_by(WorkflowExecution.id)
        )
        return list(await self.session.scalars(statement))

    @staticmethod
    def workflow_of(execution: WorkflowExecution) -> Workflow:
        return msgspec.convert(execution.definition, Workflow)

    @staticmethod
    def open_task_ids(execution: WorkflowExecution) -> list[UUID]:
        return open_task_ids(execution)

    def progress(self, execution: WorkflowExecution) -> tuple[int, int, str | None]:
        workflow = self.workflow_of(execution)
        states = step_states(execution)
        done = sum(1 for state in states.values() if state.status in DONE)
        current = next(
            (step.phase for step in workflow.steps if step_state(execution, step.index).status not in DONE), None
        )
        return done, len(workflow.steps), current

    # -- start -------------------------------------------------------------------------------

    async def start(
        self,
        project: Project,
        workflow: Workflow,
        inputs: dict[str, Any],
        *,
        actor: str,
        core: BmadCore | None = None,
    ) -> tuple[WorkflowExecution, list[UUID]]:
        """Store the idea, the execution and its first task. Returns the tasks to enqueue after commit.

        `core`: the BMAD core the workflow came from; each step's persona file, task file and
        checklist are taken from it now and kept with the definition.
        """
        if project.status != ProjectStatus.ACTIVE.value:
            raise ConflictError(f"Project {project.id} is {project.status}; only an active project can run a workflow.")
        runnable = [step for step in workflow.steps if step.agent_type is not None]
        if not runnable:
            raise InvalidInputError(f"workflow_id: {workflow.id} has no step any of our agents can run")
        idea = await ArtifactService(session=self.session).store(
            project_id=project.id,
            task_id=None,
            source_agent=None,
            artifact_type=ArtifactType.USER_INPUT.value,
            title="Product idea",
            content={"text": str(inputs.get("idea", ""))},
            meta={"validation_status": "valid", "tags": ["idea"], "related_artifacts": [], "derived_from": []},
            granularity=Granularity.DOCUMENT.value,
            parent_id=None,
            changed_by=actor,
            event_type="artifact_created",
        )
        execution = WorkflowExecution(
            project_id=project.id,
            workflow_id=workflow.id,
            definition={
                **msgspec.to_builtins(workflow),
                RESOURCES_KEY: msgspec.to_builtins(step_resources(workflow, core)),
            },
            status=ExecutionStatus.RUNNING.value,
            step_state=initial_step_state(len(workflow.steps)),
            variables={},
            control={},
            inputs={**inputs, "idea_artifact_id": str(idea.id)},
        )
        self.session.add(execution)
        await self.session.flush()
        await self.events.record(
            "workflow_started",
            project_id=project.id,
            actor=actor,
            data={"execution_id": str(execution.id), "workflow_id": workflow.id, "steps": len(workflow.steps)},
        )
        return execution, await self.advance(execution, project)

    # -- the state machine -------------------------------------------------------------------

    async def advance(self, execution: WorkflowExecution, project: Project | None = None) -> list[UUID]:
        """Move the execution as far as it can go now; the tasks it created, to enqueue after commit.

        Phases run one after the other (a gate may stand between two); within a phase every step
        whose inputs are ready starts, so one execution may have several tasks at once.
        """
        if not is_active(execution):
            return []
        project = project or await self.session.get(Project, execution.project_id)
        if project is None:  # the project was deleted: nothing to do for it
            return []
        workflow = self.workflow_of(execution)
        started: list[UUID] = []
        stages = phase_stages(workflow)
        keys = stage_keys(stages)
        for position, stage in enumerate(stages):
            if position and await self._gate(execution, project, keys[position - 1], stages[position - 1]):
                return started  # the whole execution waits for the gate
            started += await self._advance_stage(execution, project, workflow, stage)
            if not all(step_state(execution, step.index).status in DONE for step in stage):
                settle(execution)
                return started
        await self._complete(execution, project)
        return started

    async def _gate(
        self, execution: WorkflowExecution, project: Project, key: str, stage: list[WorkflowStep]
    ) -> HitlRequest | None:
        """The pending gate after the stage `key`, opened now if needed; None once approved or not needed."""
        phase = stage[0].phase
        if not is_gated(project.oversight_level, phase):
            return None
        if not any(step_state(execution, step.index).status == StepStatus.COMPLETED for step in stage):
            return None  # every step of the phase was skipped: there is no work to approve
        request, opened = await self.gates.pending(execution, key, stage)
        if opened and request is not None:
            move(execution, ExecutionStatus.WAITING_FOR_HITL)
            await self.events.record(
                "workflow_paused",
                project_id=execution.project_id,
                data={
                    "execution_id": str(execution.id),
                    "reason": "phase_approval",
                    "phase": phase,
                    "request_id": str(request.id),
                },
            )
        return request

    async def _advance_stage(
        self, execution: WorkflowExecution, project: Project, workflow: Workflow, stage: list[WorkflowStep]
    ) -> list[UUID]:
        started: list[UUID] = []
        moved = True
        while moved:  # a skipped step may free the steps after it
            moved = False
            for position, step in enumerate(stage):
                if step_state(execution, step.index).status != StepStatus.PENDING:
                    continue
                unfinished = [
                    other for other in stage[:position] if step_state(execution, other.index).status not in DONE
                ]
                if not may_start(step, unfinished, execution.variables):
                    continue
                decision = cycle_note(workflow, step) or decide(
                    step,
                    oversight_level=project.oversight_level,
                    include_optional=list(execution.inputs.get("include_optional", [])),
                    variables=execution.variables,
                )
                if decision == ASK:
                    await self.gates.ask_condition(execution, step)
                elif decision is not None:
                    await self._skip(execution, step, decision)
                    moved = True
                else:
                    started += await StepStarter(self.session, self.events).start(execution, project, workflow, step)
        return started

    async def _skip(self, execution: WorkflowExecution, step: WorkflowStep, reason: str) -> None:
        set_step(execution, step.index, StepState(status=StepStatus.SKIPPED, reason=reason, finished_at=now()))
        await self.events.record(
            "workflow_step_completed",
            project_id=execution.project_id,
            data={"execution_id": str(execution.id), "step": step.index, "status": "skipped", "reason": reason},
        )

    async def on_task_finished(self, task: AgentTask, *, flags: dict[str, bool] | None = None) -> list[UUID]:
        """A run of a step finished, failed or waits for a human: record it once, then advance.

        Same transaction as the task's own change. Keyed by task id: a redelivered task, or one
        whose step has moved on, changes nothing.
        """
        if task.workflow_execution_id is None or task.step_id is None:
            return []
        execution, project = await self.locked_with_project(task.workflow_execution_id)
        state = step_state(execution, task.step_id)
        run = next((run for run in state.all_runs() if run.task_id == task.id), None)
        if run is None or run.status not in (RunStatus.RUNNING, RunStatus.WAITING_FOR_HITL):
            return []
        run_status = RUN_OF_TASK.get(task.status, RunStatus.FAILED)
        if run_status == run.status:
            return []
        state = with_run_status(state, task.id, run_status)
        finished = state.status in DONE or state.status == StepStatus.FAILED
        if finished:
            state = msgspec.structs.replace(state, finished_at=now())
        set_step(execution, task.step_id, state)
        if flags:
            execution.variables = {**execution.variables, **flags}
        if finished:
            await self.events.record(
                "workflow_step_completed",
                project_id=execution.project_id,
                task_id=task.id,
                data={
                    "execution_id": str(execution.id),
                    "step": int(task.step_id),
                    "status": state.status.value,
                    "task_id": str(task.id),
                    "task_ids": [str(run.task_id) for run in state.runs],
                },
            )
        if state.status == StepStatus.FAILED:
            return await self._fail(execution, int(task.step_id), task.error)
        return await self.advance(execution, project)

    async def replace_run(self, old: AgentTask, new: AgentTask) -> None:
        """A rejected task is redone by `new`: the step's run follows the new task."""
        if old.workflow_execution_id is None or old.step_id is None:
            return
        execution = await self.get(old.workflow_execution_id, lock=True)
        state = step_state(execution, old.step_id)
        if any(run.task_id == old.id for run in state.all_runs()):
            state = with_run_status(state, old.id, RunStatus.RUNNING, task_id=new.id, redo_of=old.id)
        set_step(execution, old.step_id, state)
        settle(execution)

    async def _fail(self, execution: WorkflowExecution, step_index: int, error: str | None) -> list[UUID]:
        """A step failed: so does the execution. Its other unfinished tasks are cancelled."""
        if ExecutionStatus(execution.status) in OPEN:
            move(execution, ExecutionStatus.FAILED)
            execution.error = f"step {step_index} failed: {error}"
            execution.finished_at = now()
            await self.events.record(
                "workflow_failed",
                project_id=execution.project_id,
                data={"execution_id": str(execution.id), "step": step_index, "error": error},
            )
            for task_id in open_task_ids(execution):
                await TaskService(session=self.session).cancel_open(task_id, actor="workflow", commit=False)
            await self._cancel_requests(execution)
        return []

    async def _cancel_requests(self, execution: WorkflowExecution) -> None:
        """The execution is over: nobody needs to answer its pending requests any more."""
        pending = select(HitlRequest).where(
            HitlRequest.workflow_execution_id == execution.id, HitlRequest.status == HitlStatus.PENDING.value
        )
        for request in await self.session.scalars(pending):
            move_request(request, HitlStatus.CANCELLED)

    async def _complete(self, execution: WorkflowExecution, project: Project) -> None:
        move(execution, ExecutionStatus.COMPLETED)
        execution.finished_at = now()
        execution.current_step = None
        project.status = ProjectStatus.COMPLETED.value
        await self.events.record(
            "workflow_completed",
            project_id=project.id,
            data={"execution_id": str(execution.id), "workflow_id": execution.workflow_id},
        )
        await self.events.record(
            "project_completed",
            project_id=project.id,
            data={"project_id": str(project.id), "execution_id": str(execution.id)},
        )

    # -- pause, resume, cancel ----------------------------------------------------------------

    async def pause(self, execution_id: UUID, *, actor: str, stop: bool = False) -> WorkflowExecution:
        """Pause a running execution; `stop`: by the project's emergency stop, resumed with the project."""
        execution = await self.get(execution_id, lock=True)
        if not is_active(execution):
            raise ConflictError(f"Execution {execution_id} is {execution.status}; only a running one can be paused.")
        self._pause(execution, stopped=stop)
        await self.events.record(
            "workflow_paused",
            project_id=execution.project_id,
            actor=actor,
            data={"execution_id": str(execution.id), "reason": "paused"},
        )
        return execution

    def _pause(self, execution: WorkflowExecution, *, stopped: bool = False) -> None:
        control = control_of(execution)
        paused_from = ExecutionStatus(execution.status)
        set_control(execution, msgspec.structs.replace(control, paused_from=paused_from, stopped=stopped))
        move(execution, ExecutionStatus.PAUSED)

    async def resume(
        self, execution_id: UUID, *, actor: str, stopped_only: bool = False
    ) -> tuple[WorkflowExecution, list[UUID]]:
        """Resume a paused execution where it was; `stopped_only`: only one the emergency stop paused
        (another is left paused, with no follow-ups)."""
        execution = await self.get(execution_id, lock=True)
        if execution.status != ExecutionStatus.PAUSED.value:
            raise ConflictError(f"Execution {execution_id} is {execution.status}; only a paused one can be resumed.")
        control = control_of(execution)
        if stopped_only and not control.stopped:
            return execution, []
        set_control(execution, msgspec.structs.replace(control, paused_from=None, stopped=False))
        move(execution, control.paused_from or ExecutionStatus.RUNNING)
        await self.gates.reask(execution)
        await self.events.record(
            "workflow_resumed", project_id=execution.project_id, actor=actor, data={"execution_id": str(execution.id)}
        )
        # Steps that finished while it was paused are recorded; now it moves on from them.
        return execution, await self.advance(execution)

    async def cancel(self, execution_id: UUID, *, actor: str) -> tuple[WorkflowExecution, list[UUID]]:
        """Cancel the execution; returns its unfinished tasks, which the caller cancels."""
        execution = await self.get(execution_id, lock=True)
        if ExecutionStatus(execution.status) not in OPEN:
            raise ConflictError(f"Execution {execution_id} is already {execution.status}.")
        move(execution, ExecutionStatus.CANCELLED)
        execution.finished_at = now()
        running = open_task_ids(execution)
        await self._cancel_requests(execution)
        await self.events.record(
            "workflow_cancelled", project_id=execution.project_id, actor=actor, data={"execution_id": str(execution.id)}
        )
        return execution, running

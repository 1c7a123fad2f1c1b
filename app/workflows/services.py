"""Workflow executions: a durable state machine over a snapshot of a BMAD workflow.

All state is in the `workflow_execution` row (status, per-step state, flags); nothing lives only
in memory, so any process can continue an execution. Every change happens in one transaction
with its events, under a lock on the execution's row. A step's completion is keyed by its task
id: a task redelivered after a crash finds its step already done and changes nothing. New tasks
are written `pending` in the same transaction and enqueued after commit (the sweep queues any
that a crash left behind).

Steps run one after the other, in the order of the definition. Between phases the execution
stops on a `phase_approval` gate when the project's oversight level asks for one (high: every
phase; medium: design, build and launch; low: none).
"""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.artifacts.models import Artifact, ArtifactType, Granularity
from app.artifacts.services import ArtifactService
from app.bmad.loader import Workflow, WorkflowStep
from app.core.exceptions import ConflictError, InvalidInputError, NotFoundError
from app.events.services import EventService
from app.hitl.models import HitlKind, HitlRequest, HitlStatus
from app.hitl.services import HitlService
from app.projects.models import OversightLevel, Project, ProjectStatus
from app.tasks.models import AgentTask, TaskStatus
from app.tasks.schemas import TaskCreate
from app.tasks.services import TaskService
from app.workflows.models import ExecutionStatus, Handoff, HandoffStatus, WorkflowExecution

GATED_PHASES: dict[str, frozenset[str]] = {
    OversightLevel.HIGH.value: frozenset({"discovery", "plan", "design", "build", "validate", "launch"}),
    OversightLevel.MEDIUM.value: frozenset({"design", "build", "launch"}),
    OversightLevel.LOW.value: frozenset(),
}
# BMAD artifact names onto our artifact types (ours are named by their type already).
ARTIFACT_NAMES: dict[str, ArtifactType] = {
    "project-brief.md": ArtifactType.SOFTWARE_SPECIFICATION,
    "prd.md": ArtifactType.SOFTWARE_SPECIFICATION,
    "architecture.md": ArtifactType.SYSTEM_ARCHITECTURE,
    "front-end-spec.md": ArtifactType.SYSTEM_ARCHITECTURE,
    "sharded_docs": ArtifactType.IMPLEMENTATION_PLAN,
    "story.md": ArtifactType.IMPLEMENTATION_PLAN,
    "implementation_files": ArtifactType.SOURCE_CODE,
}
OPEN = (ExecutionStatus.RUNNING.value, ExecutionStatus.WAITING_FOR_HITL.value, ExecutionStatus.PAUSED.value)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _set_step(execution: WorkflowExecution, step: WorkflowStep, state: dict[str, Any]) -> None:
    # A new dict every time: JSON columns are saved when the attribute is assigned a new object,
    # not when an object it already holds is changed in place.
    execution.step_state = {**execution.step_state, str(step.index): state}


def artifact_type_of(name: str) -> ArtifactType | None:
    name = name.split(" ")[0].strip()
    if name in ARTIFACT_NAMES:
        return ARTIFACT_NAMES[name]
    try:
        return ArtifactType(name)
    except ValueError:
        return None


class ExecutionService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.events = EventService(session=session)

    # -- reads -------------------------------------------------------------------------------

    async def get(self, execution_id: UUID, *, lock: bool = False) -> WorkflowExecution:
        statement = select(WorkflowExecution).where(WorkflowExecution.id == execution_id)
        if lock:
            statement = statement.with_for_update()
        execution: WorkflowExecution | None = await self.session.scalar(statement)
        if execution is None:
            raise NotFoundError(f"Execution {execution_id} does not exist.")
        return execution

    async def of_project(self, project_id: UUID) -> list[WorkflowExecution]:
        statement = (
            select(WorkflowExecution).where(WorkflowExecution.project_id == project_id).order_by(WorkflowExecution.id)
        )
        return list(await self.session.scalars(statement))

    @staticmethod
    def workflow_of(execution: WorkflowExecution) -> Workflow:
        return msgspec.convert(execution.definition, Workflow)

    # -- start -------------------------------------------------------------------------------

    async def start(
        self, project: Project, workflow: Workflow, inputs: dict[str, Any], *, actor: str
    ) -> tuple[WorkflowExecution, list[UUID]]:
        """Store the idea, the execution and its first task. Returns the tasks to enqueue after commit."""
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
            definition=msgspec.to_builtins(workflow),
            status=ExecutionStatus.RUNNING.value,
            step_state={str(step.index): {"status": "pending"} for step in workflow.steps},
            variables={},
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
        """Move the execution as far as it can go now; the tasks it created, to enqueue after commit."""
        if execution.status != ExecutionStatus.RUNNING.value:
            return []
        project = project or await self.session.get(Project, execution.project_id)
        if project is None:  # the project was deleted: nothing to do for it
            return []
        workflow = self.workflow_of(execution)
        previous: WorkflowStep | None = None
        for step in workflow.steps:
            state = execution.step_state[str(step.index)]
            if state["status"] in ("completed", "skipped"):
                previous = step if state["status"] == "completed" else previous
                continue
            if state["status"] in ("running", "waiting_for_hitl"):
                return []  # one step at a time
            # A gate between phases, when the oversight level asks for one.
            if previous is not None and previous.phase != step.phase:
                gate = await self._gate(execution, project, previous.phase)
                if gate is not None:
                    return []
            skip_reason = self._skip_reason(execution, project, step)
            if skip_reason is not None:
                _set_step(
                    execution, step, {"status": "skipped", "reason": skip_reason, "finished_at": now().isoformat()}
                )
                await self.events.record(
                    "workflow_step_completed",
                    project_id=execution.project_id,
                    data={
                        "execution_id": str(execution.id),
                        "step": step.index,
                        "status": "skipped",
                        "reason": skip_reason,
                    },
                )
                continue
            task = await self._task_for(execution, project, workflow, step, previous)
            _set_step(execution, step, {"status": "running", "task_id": str(task.id), "started_at": now().isoformat()})
            execution.current_step = str(step.index)
            await self.events.record(
                "workflow_step_started",
                project_id=execution.project_id,
                task_id=task.id,
                data={
                    "execution_id": str(execution.id),
                    "step": step.index,
                    "agent_type": step.agent_type.value if step.agent_type else None,
                    "phase": step.phase,
                    "task_id": str(task.id),
                },
            )
            return [task.id]
        await self._complete(execution, project)
        return []

    def _skip_reason(self, execution: WorkflowExecution, project: Project, step: WorkflowStep) -> str | None:
        if step.agent_type is None:
            return f"no agent of ours runs {step.agent or step.step!r}"
        requested = set(execution.inputs.get("include_optional", []))
        if step.optional and str(step.index) not in requested and project.oversight_level != OversightLevel.HIGH.value:
            return "optional step not requested"
        if step.condition:
            flag = execution.variables.get(step.condition)
            if flag is not True:
                return f"condition {step.condition!r} is {'false' if flag is False else 'not set'}"
        return None

    async def _gate(self, execution: WorkflowExecution, project: Project, phase: str) -> HitlRequest | None:
        """The pending gate after `phase`, opened now if needed; None once approved or not needed."""
        if phase not in GATED_PHASES.get(project.oversight_level, frozenset()):
            return None
        gates: dict[str, Any] = dict(execution.variables.get("_gates", {}))
        gate = gates.get(phase)
        if gate and gate.get("status") == "approved":
            return None
        if gate is None:
            request = await HitlService(session=self.session).open_request(
                project_id=execution.project_id,
                kind=HitlKind.PHASE_APPROVAL,
                question=f"The {phase} phase is done. Approve to continue with the next phase.",
                artifact_ids=await self._phase_artifacts(execution, phase),
                actor="workflow",
            )
            request.workflow_execution_id = execution.id
            request.step_id = f"gate:{phase}"
            gates[phase] = {"status": "pending", "request_id": str(request.id)}
            execution.variables = {**execution.variables, "_gates": gates}
            execution.status = ExecutionStatus.WAITING_FOR_HITL.value
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
        return await self.session.get(HitlRequest, UUID(gate["request_id"]))

    async def approve_gate(self, request: HitlRequest) -> list[UUID]:
        """A human approved a phase gate: the execution goes on."""
        if request.workflow_execution_id is None or not (request.step_id or "").startswith("gate:"):
            return []
        execution = await self.get(request.workflow_execution_id, lock=True)
        phase = (request.step_id or "").removeprefix("gate:")
        gates = dict(execution.variables.get("_gates", {}))
        gates[phase] = {**gates.get(phase, {}), "status": "approved"}
        execution.variables = {**execution.variables, "_gates": gates}
        if execution.status == ExecutionStatus.WAITING_FOR_HITL.value:
            execution.status = ExecutionStatus.RUNNING.value
            await self.events.record(
                "workflow_resumed",
                project_id=execution.project_id,
                data={"execution_id": str(execution.id), "phase": phase},
            )
        return await self.advance(execution)

    async def _phase_artifacts(self, execution: WorkflowExecution, phase: str) -> list[UUID]:
        workflow = self.workflow_of(execution)
        task_ids = [
            UUID(state["task_id"])
            for step in workflow.steps
            if step.phase == phase and (state := execution.step_state.get(str(step.index), {})).get("task_id")
        ]
        if not task_ids:
            return []
        statement = select(Artifact.id).where(
            Artifact.task_id.in_(task_ids), Artifact.granularity == Granularity.DOCUMENT.value
        )
        return list(await self.session.scalars(statement))

    async def _task_for(
        self,
        execution: WorkflowExecution,
        project: Project,
        workflow: Workflow,
        step: WorkflowStep,
        previous: WorkflowStep | None,
    ) -> AgentTask:
        if step.agent_type is None:
            raise InvalidInputError(f"step {step.index} has no agent of ours")
        context_ids = await self._context_for(execution, step)
        what = (
            step.action.replace("_", " ") if step.action else "create " + ", ".join(step.creates or ["your documents"])
        )
        idea = str(execution.inputs.get("idea", ""))
        instructions = "\n".join(
            part
            for part in (
                f"{workflow.name}, step {step.index + 1} of {len(workflow.steps)} ({step.phase} phase): {what}.",
                step.notes or "",
                f"Product idea: {idea}" if idea else "",
            )
            if part
        )
        task = await TaskService(session=self.session).create_task(
            project.id,
            TaskCreate(agent_type=step.agent_type, instructions=instructions, context_ids=context_ids),
            default_timeout=int(execution.inputs.get("task_timeout_seconds") or 300),
            actor="workflow",
            workflow_execution_id=execution.id,
            step_id=str(step.index),
        )
        from_agent = previous.agent_type.value if previous is not None and previous.agent_type else "orchestrator"
        self.session.add(
            Handoff(
                project_id=project.id,
                workflow_execution_id=execution.id,
                from_agent=from_agent,
                to_agent=step.agent_type.value,
                phase=step.phase,
                instructions=instructions,
                context_ids=[str(artifact_id) for artifact_id in context_ids],
                expected_outputs=step.creates or step.updates,
                status=HandoffStatus.PENDING.value,
            )
        )
        return task

    async def _context_for(self, execution: WorkflowExecution, step: WorkflowStep) -> list[UUID]:
        """The latest document of each artifact the step requires (and always the idea)."""
        wanted = [kind for name in step.requires if (kind := artifact_type_of(name)) is not None]
        found: list[UUID] = []
        for kind in dict.fromkeys(wanted):
            statement = (
                select(Artifact.id)
                .where(
                    Artifact.project_id == execution.project_id,
                    Artifact.artifact_type == kind.value,
                    Artifact.granularity == Granularity.DOCUMENT.value,
                    Artifact.deleted_at.is_(None),
                )
                .order_by(Artifact.id.desc())
                .limit(1)
            )
            artifact_id = await self.session.scalar(statement)
            if artifact_id is not None:
                found.append(artifact_id)
        idea = UUID(execution.inputs["idea_artifact_id"])
        return found if idea in found else [*found, idea]

    async def on_task_finished(self, task: AgentTask, *, flags: dict[str, bool] | None = None) -> list[UUID]:
        """The step of `task` is done (or failed): record it once, then advance. Same transaction as the task."""
        if task.workflow_execution_id is None or task.step_id is None:
            return []
        execution = await self.get(task.workflow_execution_id, lock=True)
        state = dict(execution.step_state.get(task.step_id, {}))
        if state.get("task_id") != str(task.id) or state.get("status") != "running":
            return []  # a redelivered or superseded task: this step moved on already
        step_status = {
            TaskStatus.COMPLETED.value: "completed",
            TaskStatus.WAITING_FOR_HITL.value: "waiting_for_hitl",
        }.get(task.status, "failed")
        execution.step_state = {
            **execution.step_state,
            task.step_id: {**state, "status": step_status, "finished_at": now().isoformat()},
        }
        if flags:
            execution.variables = {**execution.variables, **flags}
        await self.events.record(
            "workflow_step_completed",
            project_id=execution.project_id,
            task_id=task.id,
            data={
                "execution_id": str(execution.id),
                "step": int(task.step_id),
                "status": step_status,
                "task_id": str(task.id),
            },
        )
        if step_status == "failed":
            execution.status = ExecutionStatus.FAILED.value
            execution.error = f"step {task.step_id} failed: {task.error}"
            execution.finished_at = now()
            await self.events.record(
                "workflow_failed",
                project_id=execution.project_id,
                data={"execution_id": str(execution.id), "step": int(task.step_id), "error": task.error},
            )
            return []
        if step_status == "waiting_for_hitl":
            return []
        return await self.advance(execution)

    async def _complete(self, execution: WorkflowExecution, project: Project) -> None:
        execution.status = ExecutionStatus.COMPLETED.value
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

    async def pause(self, execution_id: UUID, *, actor: str) -> WorkflowExecution:
        execution = await self.get(execution_id, lock=True)
        if execution.status not in (ExecutionStatus.RUNNING.value, ExecutionStatus.WAITING_FOR_HITL.value):
            raise ConflictError(f"Execution {execution_id} is {execution.status}; only a running one can be paused.")
        execution.variables = {**execution.variables, "_paused_from": execution.status}
        execution.status = ExecutionStatus.PAUSED.value
        await self.events.record(
            "workflow_paused",
            project_id=execution.project_id,
            actor=actor,
            data={"execution_id": str(execution.id), "reason": "paused"},
        )
        return execution

    async def resume(self, execution_id: UUID, *, actor: str) -> tuple[WorkflowExecution, list[UUID]]:
        execution = await self.get(execution_id, lock=True)
        if execution.status != ExecutionStatus.PAUSED.value:
            raise ConflictError(f"Execution {execution_id} is {execution.status}; only a paused one can be resumed.")
        execution.status = execution.variables.get("_paused_from", ExecutionStatus.RUNNING.value)
        await self.events.record(
            "workflow_resumed", project_id=execution.project_id, actor=actor, data={"execution_id": str(execution.id)}
        )
        # Steps that finished while it was paused are recorded; now it moves on from them.
        return execution, await self.advance(execution)

    async def cancel(self, execution_id: UUID, *, actor: str) -> tuple[WorkflowExecution, list[UUID]]:
        """Cancel the execution; returns its unfinished tasks, which the caller cancels."""
        execution = await self.get(execution_id, lock=True)
        if execution.status not in OPEN:
            raise ConflictError(f"Execution {execution_id} is already {execution.status}.")
        execution.status = ExecutionStatus.CANCELLED.value
        execution.finished_at = now()
        running = [
            UUID(state["task_id"]) for state in execution.step_state.values() if state.get("status") == "running"
        ]
        pending = select(HitlRequest).where(
            HitlRequest.workflow_execution_id == execution.id, HitlRequest.status == HitlStatus.PENDING.value
        )
        for request in await self.session.scalars(pending):
            request.status = HitlStatus.CANCELLED.value
        await self.events.record(
            "workflow_cancelled", project_id=execution.project_id, actor=actor, data={"execution_id": str(execution.id)}
        )
        return execution, running

    def progress(self, execution: WorkflowExecution) -> tuple[int, int, str | None]:
        workflow = self.workflow_of(execution)
        done = sum(1 for state in execution.step_state.values() if state.get("status") in ("completed", "skipped"))
        current = next(
            (
                step.phase
                for step in workflow.steps
                if execution.step_state[str(step.index)].get("status") not in ("completed", "skipped")
            ),
            None,
        )
        return done, len(workflow.steps), current

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
from app.bmad.loader import BmadCore, Workflow, WorkflowStep
from app.config import HitlSettings
from app.core.exceptions import ConflictError, InvalidInputError, NotFoundError
from app.events.services import EventService
from app.hitl.models import HitlKind, HitlRequest, HitlStatus, Urgency
from app.hitl.services import HitlService
from app.projects.models import OversightLevel, Project, ProjectStatus
from app.tasks.models import AgentTask, AgentType, TaskStatus
from app.tasks.schemas import StepBrief, TaskCreate
from app.tasks.services import TaskService
from app.workflows.context import (
    Inputs,
    StepInputs,
    StepResources,
    depends_on,
    made_by_earlier_steps,
    noun_kind,
    output_types,
    repeat_nouns,
    step_resources,
)
from app.workflows.models import ExecutionStatus, Handoff, HandoffStatus, WorkflowExecution

GATED_PHASES: dict[str, frozenset[str]] = {
    OversightLevel.HIGH.value: frozenset({"discovery", "plan", "design", "build", "validate", "launch"}),
    OversightLevel.MEDIUM.value: frozenset({"design", "build", "launch"}),
    OversightLevel.LOW.value: frozenset(),
}
OPEN = (ExecutionStatus.RUNNING.value, ExecutionStatus.WAITING_FOR_HITL.value, ExecutionStatus.PAUSED.value)
DONE = ("completed", "skipped")
ASK = "ask"  # a decision: put the step's condition to a human
MAX_RUNS = 50  # runs of one `repeats` step
# Beside the workflow in an execution's definition: each step's StepResources, by step index.
RESOURCES_KEY = "resources"
# What a HITL request of an execution holds up, by its step_id.
GATE_PREFIX, CONDITION_PREFIX, INTERRUPTED_PREFIX = "gate:", "condition:", "interrupted:"


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _set_step(execution: WorkflowExecution, step: WorkflowStep, state: dict[str, Any]) -> None:
    # A new dict every time: JSON columns are saved when the attribute is assigned a new object,
    # not when an object it already holds is changed in place.
    execution.step_state = {**execution.step_state, str(step.index): state}


def _state(execution: WorkflowExecution, step: WorkflowStep) -> dict[str, Any]:
    state: dict[str, Any] = execution.step_state.get(str(step.index), {"status": "pending"})
    return state


def step_runs(state: dict[str, Any]) -> list[dict[str, Any]]:
    """A step's runs (fresh dicts); executions stored before `runs` existed had one `task_id`."""
    if "runs" in state:
        return [dict(run) for run in state["runs"]]
    if state.get("task_id"):
        return [{"task_id": state["task_id"], "status": state["status"], "item": None}]
    return []


def _step_status(runs: list[dict[str, Any]]) -> str:
    statuses = {run["status"] for run in runs}
    if "failed" in statuses:
        return "failed"
    if "running" in statuses:
        return "running"
    if "waiting_for_hitl" in statuses:
        return "waiting_for_hitl"
    return "completed"


def phase_stages(workflow: Workflow) -> list[list[WorkflowStep]]:
    """The sequence cut where the phase changes: stages run one after the other."""
    stages: list[list[WorkflowStep]] = []
    for step in workflow.steps:
        if stages and stages[-1][0].phase == step.phase:
            stages[-1].append(step)
        else:
            stages.append([step])
    return stages


def stage_keys(stages: list[list[WorkflowStep]]) -> list[str]:
    """Each stage's gate key: its phase, with `#n` from the phase's second occurrence on."""
    seen: dict[str, int] = {}
    keys = []
    for stage in stages:
        phase = stage[0].phase
        seen[phase] = seen.get(phase, 0) + 1
        keys.append(phase if seen[phase] == 1 else f"{phase}#{seen[phase]}")
    return keys


def may_start(step: WorkflowStep, unfinished: list[WorkflowStep], variables: dict[str, Any]) -> bool:
    """Whether a pending step may start beside the unfinished earlier steps of its phase.

    It waits for those it depends on; a step with effects outside the server waits for all of
    them; and a condition no one has set yet waits for them too, since any of them may set it.
    """
    if not unfinished:
        return True
    if step.side_effects or (step.condition and step.condition not in variables):
        return False
    return not any(depends_on(step, earlier) for earlier in unfinished)


def _item_label(item: Any) -> str | None:
    if item is None:
        return None
    if isinstance(item, dict):
        name = item.get("title") or item.get("name") or item.get("summary")
        ident = item.get("id")
        text = f"{ident}: {name}" if ident and name else str(name or ident or msgspec.json.encode(item).decode())
    else:
        text = str(item)
    return text[:300]


def _work_of(step: WorkflowStep) -> str:
    """What a step does, in words: `create story`, `update prd.md (if needed)`, `validate all_artifacts`."""
    if step.action:
        return step.action.replace("_", " ")
    if step.creates:
        return "create " + ", ".join(step.creates)
    if step.updates:
        return "update " + ", ".join(step.updates)
    if step.validates:
        return "validate " + step.validates
    return (step.step or "its work").replace("_", " ")


class RepeatItem(msgspec.Struct, kw_only=True, frozen=True):
    """One run's item: a list entry of a document, or a whole artifact (an epic of the sharding)."""

    content: Any = None
    artifact_id: UUID | None = None
    kind: str | None = None


def _item_text(instructions: str, item: Any, number: int, total: int) -> str:
    if item is None:
        return instructions
    body = item if isinstance(item, str) else msgspec.json.encode(item).decode()
    return f"{instructions}\nThis run is item {number} of {total}; do only this one: {body[:4000]}"


class ExecutionService:
    def __init__(self, session: AsyncSession, hitl: HitlSettings) -> None:
        self.session = session
        self.hitl = hitl
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
        """Move the execution as far as it can go now; the tasks it created, to enqueue after commit.

        Phases run one after the other (a gate may stand between two); within a phase every step
        whose inputs are ready starts, so one execution may have several tasks at once.
        """
        if execution.status not in (ExecutionStatus.RUNNING.value, ExecutionStatus.WAITING_FOR_HITL.value):
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
            if not all(_state(execution, step)["status"] in DONE for step in stage):
                self._settle(execution)
                return started
        await self._complete(execution, project)
        return started

    async def _gate(
        self, execution: WorkflowExecution, project: Project, key: str, stage: list[WorkflowStep]
    ) -> HitlRequest | None:
        """The pending gate after the stage `key` (its phase, `#n` from its second occurrence on),
        opened now if needed; None once approved or not needed."""
        phase = stage[0].phase
        if phase not in GATED_PHASES.get(project.oversight_level, frozenset()):
            return None
        gates: dict[str, Any] = dict(execution.variables.get("_gates", {}))
        gate = gates.get(key)
        if gate and gate.get("status") == "approved":
            return None
        if gate is None:
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
                step_id=f"{GATE_PREFIX}{key}",
                actor="workflow",
            )
            gates[key] = {"status": "pending", "request_id": str(request.id), "phase": phase}
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
        if request.workflow_execution_id is None or not (request.step_id or "").startswith(GATE_PREFIX):
            return []
        execution = await self.get(request.workflow_execution_id, lock=True)
        key = (request.step_id or "").removeprefix(GATE_PREFIX)
        phase = key.split("#")[0]
        gates = dict(execution.variables.get("_gates", {}))
        gates[key] = {**gates.get(key, {}), "status": "approved"}
        execution.variables = {**execution.variables, "_gates": gates}
        if execution.status == ExecutionStatus.WAITING_FOR_HITL.value:
            execution.status = ExecutionStatus.RUNNING.value
            await self.events.record(
                "workflow_resumed",
                project_id=execution.project_id,
                data={"execution_id": str(execution.id), "phase": phase},
            )
        return await self.advance(execution)

    def gate_redos(self, execution: WorkflowExecution, key: str) -> int:
        redos: dict[str, int] = execution.variables.get("_redos", {})
        return int(redos.get(key, 0))

    async def redo_phase(self, request: HitlRequest, feedback: str, *, actor: str) -> list[UUID]:
        """A human rejected a phase gate: the stage's steps run again with the comment as feedback.

        Their earlier runs stay (with their artifacts) under `previous_runs`; the gate is asked again
        once the redo is done.
        """
        execution = await self.get(request.workflow_execution_id or UUID(int=0), lock=True)
        key = (request.step_id or "").removeprefix(GATE_PREFIX)
        phase = key.split("#")[0]
        stages = phase_stages(self.workflow_of(execution))
        stage = next((stage for stage, name in zip(stages, stage_keys(stages), strict=True) if name == key), [])
        redone = [step for step in stage if _state(execution, step)["status"] == "completed"]
        for step in redone:
            state = _state(execution, step)
            history = [*state.get("previous_runs", []), *step_runs(state)]
            _set_step(execution, step, {"status": "pending", "feedback": feedback, "previous_runs": history})
        gates = {name: value for name, value in execution.variables.get("_gates", {}).items() if name != key}
        redos = {**execution.variables.get("_redos", {}), key: self.gate_redos(execution, key) + 1}
        execution.variables = {**execution.variables, "_gates": gates, "_redos": redos}
        if execution.status == ExecutionStatus.WAITING_FOR_HITL.value:
            execution.status = ExecutionStatus.RUNNING.value
        await self.events.record(
            "workflow_phase_redone",
            project_id=execution.project_id,
            actor=actor,
            data={
                "execution_id": str(execution.id),
                "phase": phase,
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
        step_id = old.step_id or ""
        if step_id.startswith(GATE_PREFIX):
            key = step_id.removeprefix(GATE_PREFIX)
            gates = dict(execution.variables.get("_gates", {}))
            if gates.get(key, {}).get("request_id") == str(old.id):
                gates[key] = {**gates[key], "status": "pending", "request_id": str(new.id)}
                execution.variables = {**execution.variables, "_gates": gates}
        elif step_id.startswith(CONDITION_PREFIX):
            index = step_id.removeprefix(CONDITION_PREFIX)
            state = execution.step_state.get(index, {})
            if state.get("request_id") == str(old.id):
                execution.step_state = {**execution.step_state, index: {**state, "request_id": str(new.id)}}

    async def replace_run(self, old: AgentTask, new: AgentTask) -> None:
        """A rejected task is redone by `new`: the step's run follows the new task."""
        if old.workflow_execution_id is None or old.step_id is None:
            return
        execution = await self.get(old.workflow_execution_id, lock=True)
        state = dict(execution.step_state.get(old.step_id, {}))
        runs = step_runs(state)
        for run in runs:
            if run["task_id"] == str(old.id):
                run |= {"task_id": str(new.id), "status": "running", "redo_of": str(old.id)}
        if state.get("task_id") == str(old.id):
            state["task_id"] = str(new.id)
        execution.step_state = {
            **execution.step_state,
            old.step_id: {**state, "runs": runs, "status": _step_status(runs)},
        }
        self._settle(execution)

    async def pause_on_expiry(self, request: HitlRequest) -> None:
        """An unanswered request expired with the `pause` action: its execution pauses until resumed,
        and resuming asks again."""
        if request.workflow_execution_id is None:
            return
        execution = await self.get(request.workflow_execution_id, lock=True)
        reask = [*execution.variables.get("_reask", []), str(request.id)]
        execution.variables = {**execution.variables, "_reask": reask}
        if execution.status in (ExecutionStatus.RUNNING.value, ExecutionStatus.WAITING_FOR_HITL.value):
            execution.variables = {**execution.variables, "_paused_from": execution.status}
            execution.status = ExecutionStatus.PAUSED.value
            await self.events.record(
                "workflow_paused",
                project_id=execution.project_id,
                data={"execution_id": str(execution.id), "reason": "hitl_expired", "request_id": str(request.id)},
            )

    async def _reask(self, execution: WorkflowExecution) -> None:
        """Resumed after requests expired: each one still holding something up is asked again."""
        for request_id in execution.variables.get("_reask", []):
            old = await self.session.get(HitlRequest, UUID(request_id))
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
                step_id=old.step_id,
                actor="workflow",
            )
            await self.repoint(old, new)
        execution.variables = {key: value for key, value in execution.variables.items() if key != "_reask"}

    async def answer_condition(self, request: HitlRequest, *, run: bool, actor: str) -> list[UUID]:
        """A human said whether a step's condition holds: set the flag, then the step runs or is skipped."""
        execution = await self.get(request.workflow_execution_id or UUID(int=0), lock=True)
        index = (request.step_id or "").removeprefix(CONDITION_PREFIX)
        step = self.workflow_of(execution).steps[int(index)]
        if step.condition is None or execution.step_state[index].get("request_id") != str(request.id):
            return []
        execution.variables = {**execution.variables, step.condition: run}
        _set_step(execution, step, {"status": "pending"})
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
        step_id = request.step_id or ""
        if step_id.startswith(GATE_PREFIX):
            return await self.approve_gate(request)
        if step_id.startswith(CONDITION_PREFIX):
            return await self.answer_condition(request, run=action == "approve", actor=actor)
        if step_id.startswith(INTERRUPTED_PREFIX) and request.task_id is not None:
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

    async def _stage_artifacts(self, execution: WorkflowExecution, stage: list[WorkflowStep]) -> list[UUID]:
        task_ids = [
            UUID(run["task_id"]) for step in stage for run in step_runs(execution.step_state.get(str(step.index), {}))
        ]
        if not task_ids:
            return []
        statement = select(Artifact.id).where(
            Artifact.task_id.in_(task_ids), Artifact.granularity == Granularity.DOCUMENT.value
        )
        return list(await self.session.scalars(statement))

    async def _advance_stage(
        self, execution: WorkflowExecution, project: Project, workflow: Workflow, stage: list[WorkflowStep]
    ) -> list[UUID]:
        started: list[UUID] = []
        moved = True
        while moved:  # a skipped step may free the steps after it
            moved = False
            for position, step in enumerate(stage):
                if _state(execution, step)["status"] != "pending":
                    continue
                unfinished = [other for other in stage[:position] if _state(execution, other)["status"] not in DONE]
                if not may_start(step, unfinished, execution.variables):
                    continue
                decision = self._decide(execution, project, step)
                if decision == ASK:
                    await self._ask_condition(execution, step)
                elif decision is not None:
                    await self._skip(execution, step, decision)
                    moved = True
                else:
                    started += await self._start_step(execution, project, workflow, step)
        return started

    def _settle(self, execution: WorkflowExecution) -> None:
        """Running while any step runs; waiting for a human when all that is left waits for one."""
        if execution.status not in (ExecutionStatus.RUNNING.value, ExecutionStatus.WAITING_FOR_HITL.value):
            return
        statuses = {int(index): state["status"] for index, state in execution.step_state.items()}
        active = sorted(index for index, status in statuses.items() if status in ("running", "waiting_for_hitl"))
        execution.current_step = str(active[0]) if active else None
        waiting = active and all(statuses[index] == "waiting_for_hitl" for index in active)
        execution.status = (ExecutionStatus.WAITING_FOR_HITL if waiting else ExecutionStatus.RUNNING).value

    def _decide(self, execution: WorkflowExecution, project: Project, step: WorkflowStep) -> str | None:
        """None: run the step; ASK: ask a human about its condition; else why it is skipped."""
        if step.agent_type is None:
            return f"no agent of ours runs {step.agent or step.step!r}"
        requested = set(execution.inputs.get("include_optional", []))
        high = project.oversight_level == OversightLevel.HIGH.value
        if step.optional and str(step.index) not in requested and not high:
            return "optional step not requested"
        if step.condition:
            flag = execution.variables.get(step.condition)
            if flag is None:
                return ASK if high else f"condition {step.condition!r} is not set"
            if flag is not True:
                return f"condition {step.condition!r} is false"
        return None

    async def _skip(self, execution: WorkflowExecution, step: WorkflowStep, reason: str) -> None:
        _set_step(execution, step, {"status": "skipped", "reason": reason, "finished_at": now().isoformat()})
        await self.events.record(
            "workflow_step_completed",
            project_id=execution.project_id,
            data={"execution_id": str(execution.id), "step": step.index, "status": "skipped", "reason": reason},
        )

    async def _ask_condition(self, execution: WorkflowExecution, step: WorkflowStep) -> None:
        """High oversight: a condition no agent has decided goes to the product owner."""
        what = _work_of(step)
        request = await HitlService(session=self.session).open_request(
            policy=self.hitl,
            project_id=execution.project_id,
            kind=HitlKind.MANUAL,
            question=(
                f"Step {step.index + 1} ({step.agent}: {what}) runs only if {step.condition!r}, and no agent has "
                "said whether it holds. Approve to run the step, reject to skip it."
            ),
            options=("approve", "reject"),
            workflow_execution_id=execution.id,
            step_id=f"{CONDITION_PREFIX}{step.index}",
            actor="workflow",
        )
        _set_step(
            execution,
            step,
            {
                "status": "waiting_for_hitl",
                "reason": f"condition {step.condition!r} asked",
                "request_id": str(request.id),
            },
        )

    async def _start_step(
        self, execution: WorkflowExecution, project: Project, workflow: Workflow, step: WorkflowStep
    ) -> list[UUID]:
        """One task per run: one run, or one per item of the list the step `repeats` over."""
        inputs = await self._inputs(execution, workflow, step)
        items, note = await self._repeat_items(step, inputs)
        instructions = self._instructions(execution, workflow, step)
        feedback = _state(execution, step).get("feedback")  # a redo of a phase a human rejected
        resources = self.resources_of(execution).get(str(step.index), StepResources())
        outputs = output_types(step)
        parent = await self._parent_of(outputs, inputs)
        runs: list[dict[str, Any]] = []
        for number, item in enumerate(items, start=1):
            context_ids = inputs.context_ids
            if item.artifact_id is not None:  # a run of one epic (story, ...): the others are not its context
                context_ids = [
                    artifact_id
                    for artifact_id in inputs.context_ids
                    if artifact_id == item.artifact_id or inputs.kinds.get(artifact_id) != item.kind
                ]
            brief = StepBrief(
                output_types=[kind.value for kind in outputs],
                persona_id=resources.persona_id,
                persona=resources.persona,
                action=step.action,
                task_file=resources.task_file,
                task_text=resources.task_text,
                checklist=resources.checklist,
                checklist_items=resources.checklist_items,
                reviews=[str(artifact_id) for artifact_id in inputs.reviews],
                parent_id=str(item.artifact_id or parent) if (item.artifact_id or parent) else None,
                item=item.content,
            )
            task = await TaskService(session=self.session).create_task(
                project.id,
                TaskCreate(
                    agent_type=step.agent_type or AgentType.ORCHESTRATOR,
                    instructions=_item_text(instructions, item.content, number, len(items)),
                    context_ids=context_ids,
                ),
                default_timeout=int(execution.inputs.get("task_timeout_seconds") or 300),
                actor="workflow",
                workflow_execution_id=execution.id,
                step_id=str(step.index),
                at_most_once=step.side_effects,
                feedback=feedback,
                brief=msgspec.to_builtins(brief),
            )
            runs.append({"task_id": str(task.id), "status": "running", "item": _item_label(item.content)})
        state: dict[str, Any] = {
            "status": "running",
            "task_id": runs[0]["task_id"],
            "runs": runs,
            "started_at": now().isoformat(),
        }
        if note:
            state["reason"] = note
        if inputs.missing:
            state["missing_inputs"] = inputs.missing
        previous = _state(execution, step)
        if feedback:
            state |= {"feedback": feedback, "previous_runs": previous.get("previous_runs", [])}
        _set_step(execution, step, state)
        self.session.add(
            Handoff(
                project_id=project.id,
                workflow_execution_id=execution.id,
                from_agent=self._handing_over(execution, workflow, step),
                to_agent=(step.agent_type or AgentType.ORCHESTRATOR).value,
                phase=step.phase,
                instructions=instructions,
                context_ids=[str(artifact_id) for artifact_id in inputs.context_ids],
                expected_outputs=step.creates or step.updates or [kind.value for kind in outputs],
                status=HandoffStatus.PENDING.value,
            )
        )
        data: dict[str, Any] = {
            "execution_id": str(execution.id),
            "step": step.index,
            "agent_type": step.agent_type.value if step.agent_type else None,
            "phase": step.phase,
            "task_id": runs[0]["task_id"],
            "task_ids": [run["task_id"] for run in runs],
        }
        if inputs.missing:
            data["missing_inputs"] = inputs.missing
        await self.events.record(
            "workflow_step_started", project_id=execution.project_id, task_id=UUID(runs[0]["task_id"]), data=data
        )
        return [UUID(run["task_id"]) for run in runs]

    @staticmethod
    def resources_of(execution: WorkflowExecution) -> dict[str, StepResources]:
        return msgspec.convert(execution.definition.get(RESOURCES_KEY, {}), dict[str, StepResources])

    @staticmethod
    def _handing_over(execution: WorkflowExecution, workflow: Workflow, step: WorkflowStep) -> str:
        """The agent of the last finished step before this one: who hands the work over."""
        for earlier in reversed(workflow.steps[: step.index]):
            if earlier.agent_type is not None and _state(execution, earlier)["status"] == "completed":
                return earlier.agent_type.value
        return "orchestrator"

    @staticmethod
    def _instructions(execution: WorkflowExecution, workflow: Workflow, step: WorkflowStep) -> str:
        what = _work_of(step)
        idea = str(execution.inputs.get("idea", ""))
        return "\n".join(
            part
            for part in (
                f"{workflow.name}, step {step.index + 1} of {len(workflow.steps)} ({step.phase} phase): {what}.",
                step.notes or "",
                f"Product idea: {idea}" if idea else "",
            )
            if part
        )

    async def _repeat_items(self, step: WorkflowStep, inputs: Inputs) -> tuple[list[RepeatItem], str | None]:
        """The items of `repeats: for_each_<x>`: the <x> artifacts among the step's inputs (each epic
        of the sharding), else the first list of <x>s in its required documents (a plan's tasks)."""
        if not step.repeats:
            return [RepeatItem()], None
        nouns = repeat_nouns(step)
        for noun in nouns:
            kind = noun_kind(noun)
            ids = [artifact_id for artifact_id in inputs.context_ids if kind and inputs.kinds.get(artifact_id) == kind]
            if ids:
                rows = await self.session.scalars(select(Artifact).where(Artifact.id.in_(ids)).order_by(Artifact.id))
                items = [RepeatItem(content=row.content, artifact_id=row.id, kind=row.artifact_type) for row in rows]
                if len(items) > MAX_RUNS:
                    return items[:MAX_RUNS], f"{len(items)} {noun} artifacts; the first {MAX_RUNS} run"
                return items, None
        statement = select(Artifact).where(Artifact.id.in_(inputs.context_ids)).order_by(Artifact.id.desc())
        documents = [
            artifact
            for artifact in await self.session.scalars(statement)
            if artifact.artifact_type != ArtifactType.USER_INPUT.value and isinstance(artifact.content, dict)
        ]
        for noun in nouns:
            keys = [noun[:-1] + "ies" if noun.endswith("y") else noun + "s", noun + "es", noun, "items"]
            for artifact in documents:
                for key in keys:
                    found = artifact.content.get(key)
                    if isinstance(found, list) and found:
                        items = [RepeatItem(content=value) for value in found]
                        if len(items) > MAX_RUNS:
                            note = f"{len(found)} {key} in {artifact.title!r}; the first {MAX_RUNS} run"
                            return items[:MAX_RUNS], note
                        return items, None
        wanted = " or ".join(nouns) or "repeat"
        return [RepeatItem()], f"no list of {wanted} items in the required documents; the step runs once"

    async def _inputs(self, execution: WorkflowExecution, workflow: Workflow, step: WorkflowStep) -> Inputs:
        """What the step requires (and updates or validates), and always the idea: from an earlier
        step of this execution, else the project's newest; what neither has is reported missing."""
        runs_of = {
            other.index: (
                (state := _state(execution, other))["status"],
                [UUID(run["task_id"]) for run in step_runs(state)],
            )
            for other in workflow.steps[: step.index]
        }
        return await StepInputs(self.session).resolve(
            project_id=execution.project_id,
            idea_id=UUID(execution.inputs["idea_artifact_id"]),
            step=step,
            made_by_earlier=made_by_earlier_steps(workflow, step, runs_of),
        )

    async def _parent_of(self, outputs: list[ArtifactType], inputs: Inputs) -> UUID | None:
        """Epics are written under the PRD they shard: the newest specification among the inputs."""
        if ArtifactType.EPIC not in outputs:
            return None
        specifications = [
            artifact_id
            for artifact_id in inputs.context_ids
            if inputs.kinds.get(artifact_id) == ArtifactType.SOFTWARE_SPECIFICATION.value
        ]
        return max(specifications) if specifications else None

    async def on_task_finished(self, task: AgentTask, *, flags: dict[str, bool] | None = None) -> list[UUID]:
        """A run of a step finished, failed or waits for a human: record it once, then advance.

        Same transaction as the task's own change. Keyed by task id: a redelivered task, or one
        whose step has moved on, changes nothing.
        """
        if task.workflow_execution_id is None or task.step_id is None:
            return []
        execution = await self.get(task.workflow_execution_id, lock=True)
        state = dict(execution.step_state.get(task.step_id, {}))
        runs = step_runs(state)
        run = next((run for run in runs if run["task_id"] == str(task.id)), None)
        if run is None or run["status"] not in ("running", "waiting_for_hitl"):
            return []
        run_status = {
            TaskStatus.COMPLETED.value: "completed",
            TaskStatus.WAITING_FOR_HITL.value: "waiting_for_hitl",
            TaskStatus.WORKING.value: "running",
            TaskStatus.PENDING.value: "running",
            TaskStatus.QUEUED.value: "running",
        }.get(task.status, "failed")
        if run_status == run["status"]:
            return []
        run["status"] = run_status
        step_status = _step_status(runs)
        state = {**state, "runs": runs, "status": step_status}
        if step_status in DONE or step_status == "failed":
            state["finished_at"] = now().isoformat()
        execution.step_state = {**execution.step_state, task.step_id: state}
        if flags:
            execution.variables = {**execution.variables, **flags}
        if step_status in DONE or step_status == "failed":
            await self.events.record(
                "workflow_step_completed",
                project_id=execution.project_id,
                task_id=task.id,
                data={
                    "execution_id": str(execution.id),
                    "step": int(task.step_id),
                    "status": step_status,
                    "task_id": str(task.id),
                    "task_ids": [run["task_id"] for run in runs],
                },
            )
        if step_status == "failed":
            return await self._fail(execution, int(task.step_id), task.error)
        return await self.advance(execution)

    async def _fail(self, execution: WorkflowExecution, step_index: int, error: str | None) -> list[UUID]:
        """A step failed: so does the execution. Its other unfinished tasks are cancelled."""
        if execution.status in OPEN:
            execution.status = ExecutionStatus.FAILED.value
            execution.error = f"step {step_index} failed: {error}"
            execution.finished_at = now()
            await self.events.record(
                "workflow_failed",
                project_id=execution.project_id,
                data={"execution_id": str(execution.id), "step": step_index, "error": error},
            )
            for task_id in self.open_task_ids(execution):
                await TaskService(session=self.session).cancel_open(task_id, actor="workflow", commit=False)
            await self._cancel_requests(execution)
        return []

    async def _cancel_requests(self, execution: WorkflowExecution) -> None:
        """The execution is over: nobody needs to answer its pending requests any more."""
        pending = select(HitlRequest).where(
            HitlRequest.workflow_execution_id == execution.id, HitlRequest.status == HitlStatus.PENDING.value
        )
        for request in await self.session.scalars(pending):
            request.status = HitlStatus.CANCELLED.value

    @staticmethod
    def open_task_ids(execution: WorkflowExecution) -> list[UUID]:
        return [
            UUID(run["task_id"])
            for state in execution.step_state.values()
            for run in step_runs(state)
            if run["status"] in ("running", "waiting_for_hitl")
        ]

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
        await self._reask(execution)
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
        running = self.open_task_ids(execution)
        await self._cancel_requests(execution)
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

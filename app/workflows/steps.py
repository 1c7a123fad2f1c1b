"""Starting a step: what it reads, the items it repeats over, one task per run, and the handoff."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.artifacts.models import Artifact, ArtifactType
from app.bmad.loader import Workflow, WorkflowStep
from app.events.services import EventService
from app.projects.models import Project
from app.tasks.models import AgentType
from app.tasks.schemas import StepBrief, TaskCreate
from app.tasks.services import TaskService
from app.workflows.context import (
    Inputs,
    StepInputs,
    StepResources,
    made_by_earlier_steps,
    noun_kind,
    output_types,
    repeat_nouns,
    repeats_of,
)
from app.workflows.graph import handing_over, instructions, item_label, item_text
from app.workflows.models import Handoff, HandoffStatus, WorkflowExecution
from app.workflows.state import (
    RunState,
    RunStatus,
    StepState,
    StepStatus,
    now,
    set_step,
    step_state,
    step_states,
)

MAX_RUNS = 50  # runs of one `repeats` step
# Beside the workflow in an execution's definition: each step's StepResources, by step index.
RESOURCES_KEY = "resources"


class RepeatItem(msgspec.Struct, kw_only=True, frozen=True):
    """One run's item: a list entry of a document, or a whole artifact (an epic of the sharding)."""

    content: Any = None
    artifact_id: UUID | None = None
    kind: str | None = None
    title: str | None = None  # an artifact's, to name its run


def resources_of(execution: WorkflowExecution) -> dict[str, StepResources]:
    return msgspec.convert(execution.definition.get(RESOURCES_KEY, {}), dict[str, StepResources])


class StepStarter:
    def __init__(self, session: AsyncSession, events: EventService) -> None:
        self.session = session
        self.events = events

    async def start(
        self, execution: WorkflowExecution, project: Project, workflow: Workflow, step: WorkflowStep
    ) -> list[UUID]:
        """One task per run: one run, or one per item of the list the step `repeats` over."""
        # Only artifacts are read here: new ones are written by core statements, and one this
        # transaction amended through the session is read as the session holds it. So no autoflush,
        # which would write the execution's steps once before the commit writes them again.
        with self.session.no_autoflush:
            inputs = await self._inputs(execution, workflow, step)
            items, note = await self._repeat_items(repeats_of(workflow, step), inputs)
        text = instructions(workflow, step, str(execution.inputs.get("idea", "")))
        previous = step_state(execution, step.index)
        feedback = previous.feedback  # a redo of a phase a human rejected
        resources = resources_of(execution).get(str(step.index), StepResources())
        outputs = output_types(step)
        parent = await self._parent_of(outputs, inputs)
        runs: list[RunState] = []
        for number, item in enumerate(items, start=1):
            context_ids = inputs.context_ids
            if item.artifact_id is not None:  # a run of one epic (story, ...): the others are not its context
                context_ids = [
                    artifact_id
                    for artifact_id in inputs.context_ids
                    if artifact_id == item.artifact_id
                    or (
                        inputs.kinds.get(artifact_id) != item.kind
                        and item.artifact_id in inputs.belongs_to.get(artifact_id, [item.artifact_id])
                    )
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
                    instructions=item_text(text, item.content, number, len(items)),
                    context_ids=context_ids,
                ),
                default_timeout=int(execution.inputs.get("task_timeout_seconds") or 300),
                actor="workflow",
                workflow_execution_id=execution.id,
                step_id=str(step.index),
                at_most_once=step.side_effects,
                feedback=feedback,
                brief=msgspec.to_builtins(brief),
                context_read=True,  # the inputs just read, and the execution's own idea
            )
            runs.append(
                RunState(task_id=task.id, status=RunStatus.RUNNING, item=item.title or item_label(item.content))
            )
        set_step(
            execution,
            step.index,
            StepState(
                status=StepStatus.RUNNING,
                runs=runs,
                started_at=now(),
                reason=note,
                missing_inputs=inputs.missing,
                feedback=feedback,
                previous_runs=previous.previous_runs if feedback else [],
            ),
        )
        completed = {index for index, state in step_states(execution).items() if state.status == StepStatus.COMPLETED}
        self.session.add(
            Handoff(
                project_id=project.id,
                workflow_execution_id=execution.id,
                from_agent=handing_over(workflow, step, completed),
                to_agent=(step.agent_type or AgentType.ORCHESTRATOR).value,
                phase=step.phase,
                instructions=text,
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
            "task_id": str(runs[0].task_id),
            "task_ids": [str(run.task_id) for run in runs],
        }
        if inputs.missing:
            data["missing_inputs"] = inputs.missing
        await self.events.record(
            "workflow_step_started", project_id=execution.project_id, task_id=runs[0].task_id, data=data
        )
        return [run.task_id for run in runs]

    async def _repeat_items(self, repeats: str | None, inputs: Inputs) -> tuple[list[RepeatItem], str | None]:
        """The items of `repeats: for_each_<x>`: the <x> artifacts among the step's inputs (each epic
        of the sharding, each story), else the first list of <x>s in its required documents (a plan's
        tasks)."""
        if not repeats:
            return [RepeatItem()], None
        nouns = repeat_nouns(repeats)
        for noun in nouns:
            kind = noun_kind(noun)
            ids = [artifact_id for artifact_id in inputs.context_ids if kind and inputs.kinds.get(artifact_id) == kind]
            if ids:
                rows = await self.session.scalars(select(Artifact).where(Artifact.id.in_(ids)).order_by(Artifact.id))
                items = [
                    RepeatItem(content=row.content, artifact_id=row.id, kind=row.artifact_type, title=row.title)
                    for row in rows
                ]
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
        states = step_states(execution)
        runs_of = {
            other.index: (
                (state := states.get(other.index, step_state(execution, other.index))).status.value,
                [run.task_id for run in state.all_runs()],
            )
            for other in workflow.steps[: step.index]
        }
        return await StepInputs(self.session).resolve(
            project_id=execution.project_id,
            idea_id=UUID(execution.inputs["idea_artifact_id"]),
            step=step,
            made_by_earlier=made_by_earlier_steps(workflow, step, runs_of),
        )

    @staticmethod
    async def _parent_of(outputs: list[ArtifactType], inputs: Inputs) -> UUID | None:
        """Epics are written under the PRD they shard: the newest specification among the inputs."""
        if ArtifactType.EPIC not in outputs:
            return None
        specifications = [
            artifact_id
            for artifact_id in inputs.context_ids
            if inputs.kinds.get(artifact_id) == ArtifactType.SOFTWARE_SPECIFICATION.value
        ]
        return max(specifications) if specifications else None

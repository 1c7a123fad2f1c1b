from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.dependencies import RuntimeDependency, SettingsDependency
from app.artifacts.models import Artifact, Granularity
from app.bmad.services import BmadService, loaded_bmad_core
from app.config import Settings
from app.core.exceptions import NotFoundError
from app.core.schema import Page
from app.core.security import Principal, Role, needs
from app.projects.models import Project
from app.projects.services import visible_project
from app.runs.jobs import commit_and_dispatch
from app.tasks.models import AgentTask
from app.tasks.services import TaskService
from app.workflows import schemas
from app.workflows.models import WorkflowExecution
from app.workflows.services import ExecutionService
from app.workflows.state import control_of, step_state, step_states


def provide_executions(db_session: NamedDependency[AsyncSession], state: State) -> ExecutionService:
    settings: Settings = state.settings
    return ExecutionService(db_session, settings.hitl)


async def to_execution(session: AsyncSession, execution: WorkflowExecution) -> schemas.Execution:
    workflow = ExecutionService.workflow_of(execution)
    task_ids = [run.task_id for state in step_states(execution).values() for run in state.all_runs()]
    statuses: dict[UUID, str] = {}
    artifacts: dict[UUID, list[UUID]] = {}
    if task_ids:
        found = await session.execute(select(AgentTask.id, AgentTask.status).where(AgentTask.id.in_(task_ids)))
        statuses = {task_id: status for task_id, status in found.tuples()}
        rows = await session.execute(
            select(Artifact.task_id, Artifact.id)
            .where(Artifact.task_id.in_(task_ids), Artifact.granularity == Granularity.DOCUMENT.value)
            .order_by(Artifact.id)
        )
        for task_id, artifact_id in rows.tuples():
            if task_id is not None:
                artifacts.setdefault(task_id, []).append(artifact_id)
    steps = []
    for step in workflow.steps:
        state = step_state(execution, step.index)
        runs = [
            schemas.StepRun(
                task_id=run.task_id,
                task_status=statuses.get(run.task_id),
                item=run.item,
                artifact_ids=artifacts.get(run.task_id, []),
            )
            for run in state.all_runs()
        ]
        task_id = runs[0].task_id if runs else None
        steps.append(
            schemas.ExecutionStep(
                index=step.index,
                agent=step.agent,
                agent_type=step.agent_type.value if step.agent_type else None,
                phase=step.phase,
                status=state.status.value,
                task_id=task_id,
                task_status=statuses.get(task_id) if task_id else None,
                artifact_ids=[artifact_id for run in runs for artifact_id in run.artifact_ids],
                runs=runs,
                request_id=state.request_id,
                reason=state.reason,
                missing_inputs=state.missing_inputs,
                started_at=state.started_at.isoformat() if state.started_at else None,
                finished_at=state.finished_at.isoformat() if state.finished_at else None,
            )
        )
    return schemas.Execution(
        id=execution.id,
        project_id=execution.project_id,
        workflow_id=execution.workflow_id,
        status=execution.status,
        current_step=execution.current_step,
        error=execution.error,
        steps=steps,
        gates=msgspec.to_builtins(control_of(execution).gates),
        variables={key: value for key, value in execution.variables.items() if not key.startswith("_")},
        created_at=execution.created_at,
        updated_at=execution.updated_at,
        finished_at=execution.finished_at,
    )


class ExecutionController(Controller):
    path = "/api/v1"
    tags = ["executions"]
    opt = needs(Role.VIEWER)
    dependencies = {"executions": Provide(provide_executions, sync_to_thread=False)}

    async def _visible(
        self, principal: Principal, executions: ExecutionService, execution_id: UUID
    ) -> WorkflowExecution:
        execution = await executions.get(execution_id)
        if not principal.can_see(execution.project_id):
            raise NotFoundError(f"Execution {execution_id} does not exist.")
        return execution

    @post("/executions", operation_id="StartExecution", status_code=202, opt=needs(Role.PRODUCT_OWNER))
    async def start(
        self,
        runtime: RuntimeDependency,
        app_settings: SettingsDependency,
        principal: NamedDependency[Principal],
        executions: NamedDependency[ExecutionService],
        data: JSONBody[schemas.ExecutionStart],
    ) -> schemas.Execution:
        principal.ensure_can_see(data.project_id)
        project = await executions.session.get(Project, data.project_id)
        if project is None:
            raise NotFoundError(f"Project {data.project_id} does not exist.")
        core = await loaded_bmad_core(app_settings.app.bmad_dir)
        workflow = BmadService(core).workflow(data.workflow_id)
        inputs = {
            "idea": data.inputs.idea,
            "include_optional": data.inputs.include_optional,
            "task_timeout_seconds": data.inputs.task_timeout_seconds or app_settings.models.task_timeout_seconds,
        }
        execution, task_ids = await executions.start(project, workflow, inputs, actor=principal.name, core=core)
        await commit_and_dispatch(runtime, executions.session, task_ids)
        return await to_execution(executions.session, execution)

    @get("/executions/{execution_id:uuid}", operation_id="GetExecution")
    async def get_execution(
        self,
        principal: NamedDependency[Principal],
        executions: NamedDependency[ExecutionService],
        execution_id: FromPath[UUID],
    ) -> schemas.Execution:
        return await to_execution(executions.session, await self._visible(principal, executions, execution_id))

    @get("/projects/{project_id:uuid}/executions", operation_id="ListProjectExecutions")
    async def list_executions(
        self,
        principal: NamedDependency[Principal],
        executions: NamedDependency[ExecutionService],
        project_id: FromPath[UUID],
    ) -> Page[schemas.ExecutionSummary]:
        await visible_project(executions.session, principal, project_id)
        rows = await executions.of_project(project_id)
        items = [
            schemas.ExecutionSummary(
                id=row.id,
                project_id=row.project_id,
                workflow_id=row.workflow_id,
                status=row.status,
                current_step=row.current_step,
                created_at=row.created_at,
                finished_at=row.finished_at,
            )
            for row in rows
        ]
        return Page(items=items, next_cursor=None)

    @get("/projects/{project_id:uuid}/completion", operation_id="GetProjectCompletion")
    async def completion(
        self,
        executions: NamedDependency[ExecutionService],
        project_id: FromPath[UUID],
    ) -> schemas.Completion:
        project = await executions.session.get(Project, project_id)
        if project is None:
            raise NotFoundError(f"Project {project_id} does not exist.")
        rows = await executions.of_project(project_id)
        latest = rows[-1] if rows else None
        done, total, phase = executions.progress(latest) if latest else (0, 0, None)
        return schemas.Completion(
            project_id=project_id,
            project_status=project.status,
            execution_id=latest.id if latest else None,
            execution_status=latest.status if latest else None,
            steps_done=done,
            steps_total=total,
            percentage=round(100 * done / total, 1) if total else 0.0,
            current_phase=phase,
        )

    @post(
        "/executions/{execution_id:uuid}/pause",
        operation_id="PauseExecution",
        status_code=200,
        opt=needs(Role.PRODUCT_OWNER),
    )
    async def pause(
        self,
        principal: NamedDependency[Principal],
        executions: NamedDependency[ExecutionService],
        execution_id: FromPath[UUID],
    ) -> schemas.Execution:
        await self._visible(principal, executions, execution_id)
        execution = await executions.pause(execution_id, actor=principal.name)
        return await to_execution(executions.session, execution)

    @post(
        "/executions/{execution_id:uuid}/resume",
        operation_id="ResumeExecution",
        status_code=200,
        opt=needs(Role.PRODUCT_OWNER),
    )
    async def resume(
        self,
        runtime: RuntimeDependency,
        principal: NamedDependency[Principal],
        executions: NamedDependency[ExecutionService],
        execution_id: FromPath[UUID],
    ) -> schemas.Execution:
        await self._visible(principal, executions, execution_id)
        execution, task_ids = await executions.resume(execution_id, actor=principal.name)
        await commit_and_dispatch(runtime, executions.session, task_ids)
        return await to_execution(executions.session, execution)

    @post(
        "/executions/{execution_id:uuid}/cancel",
        operation_id="CancelExecution",
        status_code=200,
        opt=needs(Role.PRODUCT_OWNER),
    )
    async def cancel(
        self,
        principal: NamedDependency[Principal],
        executions: NamedDependency[ExecutionService],
        execution_id: FromPath[UUID],
    ) -> schemas.Execution:
        await self._visible(principal, executions, execution_id)
        execution, running = await executions.cancel(execution_id, actor=principal.name)
        await executions.session.commit()
        tasks = TaskService(session=executions.session)
        for task_id in running:
            await tasks.cancel_if_open(task_id, actor=principal.name)
        return await to_execution(executions.session, execution)

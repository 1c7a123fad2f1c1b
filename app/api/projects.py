from __future__ import annotations

from uuid import UUID

from litestar import Controller, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromPath, JSONBody, Parameter

from app.api.dependencies import RuntimeDependency, service_provider
from app.core.schema import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page
from app.core.security import Principal, Role, needs
from app.projects import schemas
from app.projects.models import ProjectStatus
from app.projects.services import ProjectService, project_view
from app.runs.control import resume_project, stop_project
from app.runs.jobs import agent_task_enqueuer
from app.tasks.schemas import TaskCreate, TaskSubmitted
from app.tasks.services import TaskService, dispatch_all, status_rows_of_project


class ProjectController(Controller):
    path = "/api/v1/projects"
    tags = ["projects"]
    opt = needs(Role.VIEWER)
    dependencies = {
        "projects_service": service_provider(ProjectService),
        "tasks_service": service_provider(TaskService),
    }

    @post("/", operation_id="CreateProject", status_code=201, opt=needs(Role.PRODUCT_OWNER))
    async def create_project(
        self,
        principal: NamedDependency[Principal],
        projects_service: NamedDependency[ProjectService],
        data: JSONBody[schemas.ProjectCreate],
    ) -> schemas.Project:
        if principal.is_scoped:
            raise PermissionDeniedException(
                f"Token '{principal.name}' is limited to some projects; it cannot create new ones."
            )
        project = await projects_service.create_project(data, actor=principal.name)
        return projects_service.to_schema(project, schema_type=schemas.Project)

    @get("/", operation_id="ListProjects")
    async def list_projects(
        self,
        principal: NamedDependency[Principal],
        projects_service: NamedDependency[ProjectService],
        limit: int = Parameter(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
        cursor: UUID | None = Parameter(default=None, description="next_cursor of the previous page"),
        status: ProjectStatus | None = Parameter(default=None),
    ) -> Page[schemas.ProjectSummary]:
        rows, next_cursor = await projects_service.list_page(
            limit=limit, cursor=cursor, status=status, visible=principal.project_ids
        )
        items = [projects_service.to_schema(row, schema_type=schemas.ProjectSummary) for row in rows]
        return Page(items=items, next_cursor=str(next_cursor) if next_cursor else None)

    @get("/{project_id:uuid}", operation_id="GetProject")
    async def get_project(self, runtime: RuntimeDependency, project_id: FromPath[UUID]) -> schemas.Project:
        async with runtime.connection() as connection:
            return await project_view(connection, project_id)

    @patch("/{project_id:uuid}", operation_id="UpdateProject", opt=needs(Role.PRODUCT_OWNER))
    async def update_project(
        self,
        principal: NamedDependency[Principal],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
        data: JSONBody[schemas.ProjectUpdate],
    ) -> schemas.Project:
        project = await projects_service.update_project(project_id, data, actor=principal.name)
        return projects_service.to_schema(project, schema_type=schemas.Project)

    @get("/{project_id:uuid}/status", operation_id="GetProjectStatus")
    async def get_project_status(
        self, runtime: RuntimeDependency, project_id: FromPath[UUID]
    ) -> schemas.ProjectTaskStatus:
        async with runtime.connection() as connection:
            found = await status_rows_of_project(connection, project_id)
        rows = [
            schemas.TaskStatusRow(task_id, agent_type, status, created_at, updated_at)
            for task_id, agent_type, status, created_at, updated_at in found
        ]
        return schemas.ProjectTaskStatus(project_id=project_id, tasks=rows)

    @post("/{project_id:uuid}/stop", operation_id="StopProject", status_code=200, opt=needs(Role.PRODUCT_OWNER))
    async def stop(
        self,
        runtime: RuntimeDependency,
        principal: NamedDependency[Principal],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
    ) -> schemas.ProjectStopped:
        """Emergency stop: the project's executions pause and its running model calls are cancelled."""
        session = projects_service.repository.session
        halted = await stop_project(session, runtime.settings, project_id, actor=principal.name)
        await session.commit()
        return schemas.ProjectStopped(project_id=project_id, status=ProjectStatus.PAUSED, **halted)

    @post("/{project_id:uuid}/resume", operation_id="ResumeProject", status_code=200, opt=needs(Role.PRODUCT_OWNER))
    async def resume(
        self,
        runtime: RuntimeDependency,
        principal: NamedDependency[Principal],
        projects_service: NamedDependency[ProjectService],
        tasks_service: NamedDependency[TaskService],
        project_id: FromPath[UUID],
    ) -> schemas.ProjectResumed:
        """Undo an emergency stop: executions resume and the waiting tasks are queued again."""
        session = projects_service.repository.session
        queued = await resume_project(session, runtime.settings.hitl, project_id, actor=principal.name)
        await session.commit()
        await dispatch_all(tasks_service, queued, agent_task_enqueuer(runtime.broker))
        return schemas.ProjectResumed(project_id=project_id, status=ProjectStatus.ACTIVE, tasks_queued=len(queued))

    @post("/{project_id:uuid}/tasks", operation_id="CreateTask", status_code=201, opt=needs(Role.PRODUCT_OWNER))
    async def create_task(
        self,
        runtime: RuntimeDependency,
        principal: NamedDependency[Principal],
        tasks_service: NamedDependency[TaskService],
        project_id: FromPath[UUID],
        data: JSONBody[TaskCreate],
    ) -> TaskSubmitted:
        task_id, job_id = await tasks_service.submit(
            project_id,
            data,
            agent_task_enqueuer(runtime.broker),
            default_timeout=runtime.settings.models.task_timeout_seconds,
            actor=principal.name,
        )
        return TaskSubmitted(task_id=task_id, job_id=job_id)

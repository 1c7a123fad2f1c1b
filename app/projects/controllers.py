from __future__ import annotations

from uuid import UUID

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Request, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, Parameter
from taskiq import AsyncBroker

from app.core.schema import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page
from app.projects import schemas
from app.projects.models import ProjectStatus
from app.projects.services import ProjectService
from app.tasks.jobs import agent_task_enqueuer
from app.tasks.schemas import TaskCreate, TaskSubmitted
from app.tasks.services import TaskService


class ProjectController(Controller):
    path = "/api/v1/projects"
    tags = ["projects"]
    dependencies = {
        "projects_service": Provide(create_service_provider(ProjectService)),
        "tasks_service": Provide(create_service_provider(TaskService)),
    }

    @post("/", operation_id="CreateProject", status_code=201)
    async def create_project(self, projects_service: NamedDependency[ProjectService], data: JSONBody[schemas.ProjectCreate]) -> schemas.Project:
        project = await projects_service.create_project(data)
        return projects_service.to_schema(project, schema_type=schemas.Project)

    @get("/", operation_id="ListProjects")
    async def list_projects(
        self,
        projects_service: NamedDependency[ProjectService],
        limit: int = Parameter(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
        cursor: UUID | None = Parameter(default=None, description="next_cursor of the previous page"),
        status: ProjectStatus | None = Parameter(default=None),
    ) -> Page[schemas.ProjectSummary]:
        rows, next_cursor = await projects_service.list_page(limit=limit, cursor=cursor, status=status)
        items = [projects_service.to_schema(row, schema_type=schemas.ProjectSummary) for row in rows]
        return Page(items=items, next_cursor=str(next_cursor) if next_cursor else None)

    @get("/{project_id:uuid}", operation_id="GetProject")
    async def get_project(self, projects_service: NamedDependency[ProjectService], project_id: FromPath[UUID]) -> schemas.Project:
        project = await projects_service.get_project(project_id)
        return projects_service.to_schema(project, schema_type=schemas.Project)

    @patch("/{project_id:uuid}", operation_id="UpdateProject")
    async def update_project(
        self, projects_service: NamedDependency[ProjectService], project_id: FromPath[UUID], data: JSONBody[schemas.ProjectUpdate]
    ) -> schemas.Project:
        project = await projects_service.update_project(project_id, data)
        return projects_service.to_schema(project, schema_type=schemas.Project)

    @get("/{project_id:uuid}/status", operation_id="GetProjectStatus")
    async def get_project_status(self, tasks_service: NamedDependency[TaskService], project_id: FromPath[UUID]) -> schemas.ProjectTaskStatus:
        tasks = await tasks_service.tasks_of_project(project_id)
        rows = [
            schemas.TaskStatusRow(
                task_id=task.id,
                agent_type=task.agent_type,
                status=task.status,
                created_at=task.created_at,
                updated_at=task.updated_at,
            )
            for task in tasks
        ]
        return schemas.ProjectTaskStatus(project_id=project_id, tasks=rows)

    @post("/{project_id:uuid}/tasks", operation_id="CreateTask", status_code=201)
    async def create_task(
        self, request: Request[None, None, None], tasks_service: NamedDependency[TaskService], project_id: FromPath[UUID], data: JSONBody[TaskCreate]
    ) -> TaskSubmitted:
        broker: AsyncBroker = request.app.state.runtime.broker
        task_id, job_id = await tasks_service.submit(project_id, data, agent_task_enqueuer(broker))
        return TaskSubmitted(task_id=task_id, job_id=job_id)

from __future__ import annotations

from uuid import UUID

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, get
from litestar.params import FromPath
from litestar.di import NamedDependency, Provide

from app.tasks.schemas import Task
from app.tasks.services import TaskService


class TaskController(Controller):
    path = "/api/v1/tasks"
    tags = ["tasks"]
    dependencies = {"tasks_service": Provide(create_service_provider(TaskService))}

    @get("/{task_id:uuid}", operation_id="GetTask")
    async def get_task(self, tasks_service: NamedDependency[TaskService], task_id: FromPath[UUID]) -> Task:
        task = await tasks_service.get_task(task_id)
        return tasks_service.to_schema(task, schema_type=Task)

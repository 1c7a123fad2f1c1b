from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from app.api.dependencies import RuntimeDependency, service_provider
from app.core.exceptions import NotFoundError
from app.core.security import Principal, Role, current_principal, needs
from app.tasks.schemas import Task
from app.tasks.services import TaskService, task_view


class TaskController(Controller):
    path = "/api/v1/tasks"
    tags = ["tasks"]
    opt = needs(Role.VIEWER)
    dependencies = {"tasks_service": service_provider(TaskService)}

    @get("/{task_id:uuid}", operation_id="GetTask")
    async def get_task(
        self, request: Request[Any, Any, Any], runtime: RuntimeDependency, task_id: FromPath[UUID]
    ) -> Task:
        # The principal from the request, not as a second dependency: Litestar resolves two or more
        # dependencies in an anyio task group (litestar#4563), 15 % of this read's CPU.
        async with runtime.connection() as connection:
            return await task_view(connection, task_id, current_principal(request))

    @post("/{task_id:uuid}/cancel", operation_id="CancelTask", status_code=200, opt=needs(Role.PRODUCT_OWNER))
    async def cancel_task(
        self,
        principal: NamedDependency[Principal],
        tasks_service: NamedDependency[TaskService],
        task_id: FromPath[UUID],
    ) -> Task:
        """Stop a task: a queued one never starts; a running one's model call is cancelled within a second."""
        task = await tasks_service.get_task(task_id)
        if not principal.can_see(task.project_id):
            raise NotFoundError(f"Task {task_id} does not exist.")
        cancelled = await tasks_service.cancel(task_id, actor=principal.name)
        return tasks_service.to_schema(cancelled, schema_type=Task)

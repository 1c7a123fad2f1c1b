"""Every route of the server, grouped by domain."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from app.events.controllers import global_stream, project_stream
from app.health.controllers import HealthController
from app.projects.controllers import ProjectController
from app.tasks.controllers import TaskController

route_handlers: list[ControllerRouterHandler] = [
    HealthController,
    ProjectController,
    TaskController,
    project_stream,
    global_stream,
]

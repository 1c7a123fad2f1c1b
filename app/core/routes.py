"""Every route of the server, grouped by domain."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from app.agents.controllers import AgentController
from app.artifacts.controllers import ArtifactController, ProjectArtifactController
from app.bmad.controllers import BmadController
from app.chat.controllers import ChatController
from app.console.controllers import console_router
from app.documents.controllers import DocumentController
from app.events.controllers import EventController, global_stream, project_stream
from app.health.controllers import HealthController
from app.hitl.controllers import HitlController
from app.metrics.controllers import MetricsController
from app.projects.controllers import ProjectController
from app.tasks.controllers import TaskController
from app.tokens.controllers import TokenController
from app.workflows.controllers import ExecutionController

route_handlers: list[ControllerRouterHandler] = [
    HealthController,
    MetricsController,
    ProjectController,
    TaskController,
    AgentController,
    ProjectArtifactController,
    ArtifactController,
    DocumentController,
    BmadController,
    ExecutionController,
    HitlController,
    TokenController,
    project_stream,
    EventController,
    ChatController,
    global_stream,
    console_router,
]

"""Every api route of the server, grouped by domain (the console's pages are added by `app.main`)."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from app.api.agents import AgentController
from app.api.artifacts import ArtifactController, ProjectArtifactController
from app.api.audit import AuditController
from app.api.bmad import BmadController
from app.api.chat import ChatController
from app.api.documents import DocumentController
from app.api.events import EventController, global_stream, project_stream
from app.api.health import HealthController
from app.api.hitl import HitlController
from app.api.metrics import MetricsController
from app.api.projects import ProjectController
from app.api.tasks import TaskController
from app.api.tokens import TokenController
from app.api.workflows import ExecutionController

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
    AuditController,
    ChatController,
    global_stream,
]

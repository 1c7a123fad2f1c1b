from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter

from app.agents.schemas import AgentStatusList, UsageSummary
from app.agents.services import AgentService
from app.api.dependencies import service_provider
from app.core.exceptions import NotFoundError
from app.core.schema import check_iso_datetimes
from app.core.security import Principal, Role, needs
from app.projects.services import ProjectService


class AgentController(Controller):
    path = "/api/v1"
    tags = ["agents"]
    opt = needs(Role.VIEWER)
    dependencies = {
        "agents_service": service_provider(AgentService),
        "projects_service": service_provider(ProjectService),
    }

    @get("/agents/status", operation_id="ListAgentStatus")
    async def list_agent_status(
        self,
        principal: NamedDependency[Principal],
        agents_service: NamedDependency[AgentService],
        projects_service: NamedDependency[ProjectService],
        project_id: UUID | None = Parameter(default=None, description="only this project's agents"),
    ) -> AgentStatusList:
        """All six agents, `idle` when they have no work (per project with `?project_id=`)."""
        project = None
        if project_id is not None:
            if not principal.can_see(project_id):
                raise NotFoundError(f"Project {project_id} does not exist.")
            project = await projects_service.get_project(project_id)
        return AgentStatusList(items=await agents_service.status_board(project, principal.project_ids))

    @get("/projects/{project_id:uuid}/usage", operation_id="GetProjectUsage")
    async def get_project_usage(
        self,
        request: Request[Any, Any, Any],
        agents_service: NamedDependency[AgentService],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
        until: datetime.datetime | None = Parameter(
            default=None, description="only the model calls made up to this time (an event's timestamp)"
        ),
    ) -> UsageSummary:
        check_iso_datetimes(request.query_params, "until")
        await projects_service.get_project(project_id)  # 404 for an unknown project
        return await agents_service.usage_summary(project_id, until=until)

from __future__ import annotations

from uuid import UUID

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, Parameter

from app.agents.schemas import AgentStatusList, AgentStatusRow, UsageSummary
from app.agents.services import AgentService
from app.core.exceptions import NotFoundError
from app.core.security import Principal, Role, needs
from app.projects.services import ProjectService


class AgentController(Controller):
    path = "/api/v1"
    tags = ["agents"]
    opt = needs(Role.VIEWER)
    dependencies = {
        "agents_service": Provide(create_service_provider(AgentService)),
        "projects_service": Provide(create_service_provider(ProjectService)),
    }

    @get("/agents/status", operation_id="ListAgentStatus")
    async def list_agent_status(
        self,
        principal: NamedDependency[Principal],
        agents_service: NamedDependency[AgentService],
        project_id: UUID | None = Parameter(default=None, description="only this project's agents"),
    ) -> AgentStatusList:
        if project_id is not None and not principal.can_see(project_id):
            raise NotFoundError(f"Project {project_id} does not exist.")
        rows = await agents_service.statuses(project_id, principal.project_ids)
        return AgentStatusList(
            items=[
                AgentStatusRow(
                    project_id=row.project_id,
                    agent_type=row.agent_type,
                    status=row.status,
                    current_task_id=row.current_task_id,
                    updated_at=row.updated_at,
                )
                for row in rows
            ]
        )

    @get("/projects/{project_id:uuid}/usage", operation_id="GetProjectUsage")
    async def get_project_usage(
        self,
        principal: NamedDependency[Principal],
        agents_service: NamedDependency[AgentService],
        projects_service: NamedDependency[ProjectService],
        project_id: FromPath[UUID],
    ) -> UsageSummary:
        principal.ensure_can_see(project_id)
        await projects_service.get_project(project_id)  # 404 for an unknown project
        return await agents_service.usage_summary(project_id)

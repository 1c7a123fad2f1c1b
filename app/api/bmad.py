"""Read the BMAD core: workflows, templates (and render or check them), agent teams, agent files,
tasks / checklists / data files, and what did not load or is not used."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from msgspec import Meta

from app.bmad.loader import Problem, Team, Workflow, WorkflowStep
from app.bmad.services import BmadService, loaded_bmad_core
from app.core.schema import InputStruct, Page, Struct, check_json_depth
from app.core.security import Role, needs
from app.documents.render import missing_variables, render_markdown, validate_values
from app.documents.templates import Template, TemplateSection, template_variables

Identifier = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")]


async def provide_bmad_service(request: Request[Any, Any, Any]) -> BmadService:
    return BmadService(await loaded_bmad_core(request.app.state.settings.app.bmad_dir))


class WorkflowSummary(Struct):
    id: str
    name: str
    description: str
    type: str | None
    steps: int
    agents: list[str]
    phases: list[str]
    source: str


class WorkflowDetail(Struct):
    id: str
    name: str
    description: str
    type: str | None
    project_types: list[str]
    steps: list[WorkflowStep]
    agents: list[str]
    artifacts: list[str]
    unsupported: list[str]
    source: str


class TemplateSummary(Struct):
    id: str
    name: str
    version: str
    output_filename: str | None
    variables: list[str]


class TemplateDetail(Struct):
    id: str
    name: str
    version: str
    output_format: str | None
    output_filename: str | None
    output_title: str | None
    variables: list[str]
    sections: list[TemplateSection]
    unsupported: list[str]


class TemplateValues(InputStruct):
    """`{{variables}}` at the top level, `sections` (section id → content), `conditions` (text → bool)."""

    values: Annotated[dict[str, Any], Meta(max_length=500)]

    def __post_init__(self) -> None:
        super().__post_init__()
        check_json_depth("values", self.values)


class RenderedTemplate(Struct):
    template_id: str
    markdown: str
    missing_variables: list[str]


class TemplateCheck(Struct):
    template_id: str
    valid: bool
    missing_variables: list[str]
    problems: list[dict[str, str]]


class TeamDetail(Struct):
    id: str
    name: str
    description: str
    agents: list[str]
    workflows: list[str]
    source: str


class TeamCheck(Struct):
    team_id: str
    valid: bool
    problems: list[str]
    unsupported: list[str]


class CoreProblems(Struct):
    """`problems`: files that did not load. `unsupported`: files loaded or seen but not used, and why."""

    problems: list[Problem]
    unsupported: list[Problem]


class AgentFile(Struct):
    id: str
    name: str
    agent_type: str | None
    source: str
    unsupported: str | None


class DocumentSummary(Struct):
    id: str
    kind: str
    title: str
    items: int
    source: str


def _summary(workflow: Workflow) -> WorkflowSummary:
    return WorkflowSummary(
        id=workflow.id,
        name=workflow.name,
        description=workflow.description,
        type=workflow.type,
        steps=len(workflow.steps),
        agents=workflow.agents,
        phases=list(dict.fromkeys(step.phase for step in workflow.steps)),
        source=workflow.source.rsplit("/", 1)[-1],
    )


def _team(team: Team) -> TeamDetail:
    return TeamDetail(
        id=team.id,
        name=team.name,
        description=team.description,
        agents=team.agents,
        workflows=team.workflows,
        source=team.source.rsplit("/", 1)[-1],
    )


class BmadController(Controller):
    path = "/api/v1"
    tags = ["bmad"]
    opt = needs(Role.VIEWER)
    dependencies = {"bmad_service": Provide(provide_bmad_service)}

    @get("/workflows", operation_id="ListWorkflows")
    async def list_workflows(self, bmad_service: NamedDependency[BmadService]) -> Page[WorkflowSummary]:
        workflows = sorted(bmad_service.core.workflows.values(), key=lambda w: w.id)
        return Page(items=[_summary(workflow) for workflow in workflows], next_cursor=None)

    @get("/workflows/{workflow_id:str}", operation_id="GetWorkflow")
    async def get_workflow(
        self, bmad_service: NamedDependency[BmadService], workflow_id: FromPath[Identifier]
    ) -> WorkflowDetail:
        workflow = bmad_service.workflow(workflow_id)
        artifacts = [name for step in workflow.steps for name in [*step.creates, *step.updates]]
        return WorkflowDetail(
            id=workflow.id,
            name=workflow.name,
            description=workflow.description,
            type=workflow.type,
            project_types=workflow.project_types,
            steps=workflow.steps,
            agents=workflow.agents,
            artifacts=list(dict.fromkeys(artifacts)),
            unsupported=workflow.unsupported,
            source=workflow.source.rsplit("/", 1)[-1],
        )

    @get("/workflows/{workflow_id:str}/teams", operation_id="ListWorkflowTeams")
    async def workflow_teams(
        self, bmad_service: NamedDependency[BmadService], workflow_id: FromPath[Identifier]
    ) -> Page[TeamDetail]:
        return Page(items=[_team(team) for team in bmad_service.teams_for(workflow_id)], next_cursor=None)

    @get("/templates", operation_id="ListTemplates")
    async def list_templates(self, bmad_service: NamedDependency[BmadService]) -> Page[TemplateSummary]:
        items = [
            TemplateSummary(
                id=template.id,
                name=template.name,
                version=template.version,
                output_filename=template.output_filename,
                variables=template_variables(template),
            )
            for template in sorted(bmad_service.core.templates.values(), key=lambda t: t.id)
        ]
        return Page(items=items, next_cursor=None)

    @get("/templates/{template_id:str}", operation_id="GetTemplate")
    async def get_template(
        self, bmad_service: NamedDependency[BmadService], template_id: FromPath[Identifier]
    ) -> TemplateDetail:
        template: Template = bmad_service.template(template_id)
        return TemplateDetail(
            id=template.id,
            name=template.name,
            version=template.version,
            output_format=template.output_format,
            output_filename=template.output_filename,
            output_title=template.output_title,
            variables=template_variables(template),
            sections=list(template.sections),
            unsupported=template.unsupported,
        )

    @post(
        "/templates/{template_id:str}/render",
        operation_id="RenderTemplate",
        status_code=200,
        opt=needs(Role.VIEWER, read_only=True),
    )
    async def render_template(
        self,
        bmad_service: NamedDependency[BmadService],
        template_id: FromPath[Identifier],
        data: JSONBody[TemplateValues],
    ) -> RenderedTemplate:
        template = bmad_service.template(template_id)
        return RenderedTemplate(
            template_id=template.id,
            markdown=render_markdown(template, data.values),
            missing_variables=missing_variables(template, data.values),
        )

    @post(
        "/templates/{template_id:str}/validate",
        operation_id="ValidateTemplateValues",
        status_code=200,
        opt=needs(Role.VIEWER, read_only=True),
    )
    async def validate_template(
        self,
        bmad_service: NamedDependency[BmadService],
        template_id: FromPath[Identifier],
        data: JSONBody[TemplateValues],
    ) -> TemplateCheck:
        template = bmad_service.template(template_id)
        problems = validate_values(template, data.values)
        return TemplateCheck(
            template_id=template.id,
            valid=not problems,
            missing_variables=missing_variables(template, data.values),
            problems=problems,
        )

    @get("/teams", operation_id="ListTeams")
    async def list_teams(self, bmad_service: NamedDependency[BmadService]) -> Page[TeamDetail]:
        teams = sorted(bmad_service.core.teams.values(), key=lambda t: t.id)
        return Page(items=[_team(team) for team in teams], next_cursor=None)

    @get("/teams/{team_id:str}", operation_id="GetTeam")
    async def get_team(self, bmad_service: NamedDependency[BmadService], team_id: FromPath[Identifier]) -> TeamDetail:
        return _team(bmad_service.team(team_id))

    @get("/teams/{team_id:str}/validate", operation_id="ValidateTeam")
    async def validate_team(
        self, bmad_service: NamedDependency[BmadService], team_id: FromPath[Identifier]
    ) -> TeamCheck:
        team = bmad_service.team(team_id)
        problems = bmad_service.team_problems(team)
        return TeamCheck(
            team_id=team_id, valid=not problems, problems=problems, unsupported=bmad_service.team_unsupported(team)
        )

    @get("/bmad/agents", operation_id="ListBmadAgents")
    async def agents(self, bmad_service: NamedDependency[BmadService]) -> Page[AgentFile]:
        """The agent files loaded: the persona each step's `agent:` speaks with, or why it is not used."""
        core = bmad_service.core
        items = [
            AgentFile(
                id=agent_id,
                name=persona.name,
                agent_type=persona.agent_type.value,
                source=persona.source.rsplit("/", 1)[-1],
                unsupported=None,
            )
            for agent_id, persona in core.agents.items()
        ] + [
            AgentFile(
                id=agent.id,
                name=agent.name,
                agent_type=None,
                source=agent.source.rsplit("/", 1)[-1],
                unsupported=agent.unsupported,
            )
            for agent in core.other_agents.values()
        ]
        return Page(items=sorted(items, key=lambda item: item.id), next_cursor=None)

    @get("/bmad/documents", operation_id="ListBmadDocuments")
    async def documents(self, bmad_service: NamedDependency[BmadService]) -> Page[DocumentSummary]:
        """The tasks, checklists and data files a step's `uses:` / `validates:` can name."""
        core = bmad_service.core
        items = [
            DocumentSummary(
                id=doc.id, kind=doc.kind, title=doc.title, items=len(doc.items), source=doc.source.rsplit("/", 1)[-1]
            )
            for docs in (core.tasks, core.checklists, core.data)
            for doc in sorted(docs.values(), key=lambda doc: doc.id)
        ]
        return Page(items=items, next_cursor=None)

    @get("/bmad/problems", operation_id="ListBmadProblems", opt=needs(Role.ADMIN))
    async def problems(self, bmad_service: NamedDependency[BmadService]) -> CoreProblems:
        """Files of the BMAD directory that could not be loaded, and those loaded but not used, with the reason."""
        return CoreProblems(problems=bmad_service.core.problems, unsupported=bmad_service.core.unsupported)

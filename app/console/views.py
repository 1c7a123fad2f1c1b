"""What the console's pages show, gathered through the same services and builders as the API."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any
from uuid import UUID

import msgspec
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.chat import ChatMessage, to_message
from app.api.workflows import to_execution
from app.artifacts.models import Artifact
from app.bmad.services import loaded_bmad_core
from app.chat.services import ChatService
from app.config import Settings
from app.core.exceptions import NotFoundError
from app.core.security import Principal
from app.documents.html_page import markdown_fragment
from app.documents.readable import artifact_markdown
from app.hitl import schemas as hitl_schemas
from app.hitl.models import HitlRequest, HitlStatus
from app.hitl.queries import HitlQueries, status_filter, to_summary
from app.projects.models import Project
from app.projects.services import ProjectService
from app.runs.provider import services
from app.tasks.models import AgentTask
from app.workflows import schemas as workflow_schemas
from app.workflows.services import ExecutionService

CHAT_SHOWN = 100


class Phase(msgspec.Struct):
    """Consecutive steps of one phase of an execution: one stop of the timeline."""

    name: str
    status: str  # done, running, waiting, failed or pending
    steps: list[workflow_schemas.ExecutionStep]


class AgentStatus(msgspec.Struct):
    agent_type: str
    status: str
    tasks: int
    updated_at: datetime.datetime


class Panels(msgspec.Struct):
    """The parts of the project page that change while it runs (re-rendered on live events)."""

    project: Project
    executions: list[tuple[workflow_schemas.Execution, list[Phase]]]
    agents: list[AgentStatus]
    pending: list[hitl_schemas.HitlRequestSummary]
    documents: list[tuple[Artifact, list[Artifact]]]


STEP_RANK = {"failed": 4, "waiting": 3, "running": 2, "pending": 1, "done": 0}
DONE_STEPS = {"done", "completed", "skipped"}
WAITING_STEPS = {"awaiting_approval", "waiting", "waiting_for_human", "paused"}
FAILED_STEPS = {"failed", "cancelled"}


def step_state(status: str) -> str:
    if status in DONE_STEPS:
        return "done"
    if status in FAILED_STEPS:
        return "failed"
    if status in WAITING_STEPS or "wait" in status or "approval" in status:
        return "waiting"
    if status == "pending":
        return "pending"
    return "running"


def phases_of(execution: workflow_schemas.Execution) -> list[Phase]:
    phases: list[Phase] = []
    for step in execution.steps:
        if not phases or phases[-1].name != step.phase:
            phases.append(Phase(name=step.phase, status="done", steps=[]))
        phases[-1].steps.append(step)
    for phase in phases:
        states = {step_state(step.status) for step in phase.steps}
        if states == {"pending"}:
            phase.status = "pending"
        elif states <= {"done"}:
            phase.status = "done"
        else:
            phase.status = max(states - {"done", "pending"} or {"running"}, key=STEP_RANK.__getitem__)
    return phases


async def visible_project_row(session: AsyncSession, principal: Principal, project_id: UUID) -> Project:
    principal.ensure_can_see(project_id)
    return await ProjectService(session=session).get_project(project_id)


async def projects(session: AsyncSession, principal: Principal) -> list[Project]:
    rows, _ = await ProjectService(session=session).list_page(
        limit=200, cursor=None, status=None, visible=principal.project_ids
    )
    return sorted(rows, key=lambda row: row.created_at, reverse=True)


async def panels(session: AsyncSession, settings: Settings, principal: Principal, project_id: UUID) -> Panels:
    project = await visible_project_row(session, principal, project_id)
    executions = []
    for row in await ExecutionService(session, settings.hitl).of_project(project_id):
        execution = await to_execution(session, row)
        executions.append((execution, phases_of(execution)))
    executions.reverse()  # the newest first
    agents: dict[str, AgentStatus] = {}
    for task in await services(session).tasks.tasks_of_project(project_id):
        seen = agents.get(task.agent_type)
        if seen is None or task.updated_at >= seen.updated_at:
            agents[task.agent_type] = AgentStatus(
                agent_type=task.agent_type,
                status=task.status,
                tasks=(seen.tasks if seen else 0) + 1,
                updated_at=task.updated_at,
            )
        else:
            seen.tasks += 1
    now = datetime.datetime.now(datetime.UTC)
    pending = await session.scalars(
        select(HitlRequest)
        .where(HitlRequest.project_id == project_id, status_filter(HitlStatus.PENDING, now))
        .order_by(HitlRequest.created_at)
    )
    return Panels(
        project=project,
        executions=executions,
        agents=sorted(agents.values(), key=lambda agent: agent.agent_type),
        pending=[to_summary(row) for row in pending],
        documents=await services(session).artifacts.tree(project_id),
    )


async def chat(session: AsyncSession, settings: Settings, project_id: UUID) -> list[ChatMessage]:
    """The latest messages of the conversation, oldest first."""
    rows: list[Any] = []
    cursor: int | None = None
    while True:  # the conversation pages forwards; a console shows its end
        page, cursor = await ChatService(session, settings).conversation(project_id, limit=CHAT_SHOWN, cursor=cursor)
        rows = (rows + page)[-CHAT_SHOWN:]
        if cursor is None:
            break
    return [to_message(row) for row in rows]


async def hitl_context(
    session: AsyncSession, principal: Principal, request_id: UUID
) -> tuple[hitl_schemas.HitlRequestView, list[Artifact], AgentTask | None]:
    """A HITL request, the artifacts it is about and its task (as `GET /api/v1/hitl/{id}/context`)."""
    queries = HitlQueries(session)
    hitl = await queries.visible(principal, request_id)
    ids = [UUID(value) for value in hitl.artifact_ids]
    found = {a.id: a for a in await session.scalars(select(Artifact).where(Artifact.id.in_(ids)))} if ids else {}
    artifacts = [found[i] for i in ids if i in found and found[i].deleted_at is None]
    task = await session.get(AgentTask, hitl.task_id) if hitl.task_id else None
    return await queries.view(hitl), artifacts, task


async def artifact(session: AsyncSession, principal: Principal, artifact_id: UUID) -> Artifact:
    row = await session.get(Artifact, artifact_id)
    if row is None or row.deleted_at is not None or not principal.can_see(row.project_id):
        raise NotFoundError(f"Artifact {artifact_id} does not exist.")
    return row


async def readable(artifact: Artifact, project_name: str, *, under: int) -> Markup:
    """An artifact as the export writes it (its stage's document, or its fields), as HTML safe to put
    in a page: raw HTML in it is shown as text, no script links, no image from elsewhere. Rendered
    in a worker thread, as the export is: generated code can be large. Its headings go below the
    page's heading of level `under`."""

    def render() -> str:
        markdown = artifact_markdown(artifact.artifact_type, artifact.title, artifact.content, project_name)
        return markdown_fragment(markdown, heading_offset=under)

    return Markup(await asyncio.to_thread(render))  # noqa: S704 - markdown-it escapes what it does not render


def text_of(content: Any) -> tuple[str, str]:
    """An artifact's content as text to read, and the file extension it downloads with."""
    if isinstance(content, str):
        return content, "md"
    if isinstance(content, dict):
        for key in ("markdown", "text", "content", "body"):
            if isinstance(content.get(key), str) and len(content) == 1:
                return content[key], "md"
    return msgspec.json.format(msgspec.json.encode(content), indent=2).decode(), "json"


async def workflow_ids(settings: Settings) -> list[str]:
    # Off the event loop, as the API reads it: a first load of big files took /health down for 10 s.
    return list((await loaded_bmad_core(settings.app.bmad_dir)).workflows)

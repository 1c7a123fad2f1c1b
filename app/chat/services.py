"""The project chat: the product owner writes, the orchestrator answers through its model.

A message is an event (`user_chat_message`) and becomes an orchestrator task whose context is the
project's latest documents, so questions about the work are answered from the context store.
The answer comes back as `agent_chat_message` events: the response, and a `question` for each
thing the orchestrator needs to know. If the orchestrator judges the message a new product idea
(its answer sets the flag `start_workflow`) and nothing runs yet, the default workflow starts
with the message as the idea. The conversation is read back from the event log.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.outputs import AgentAnswer
from app.artifacts.models import Artifact, Granularity
from app.bmad.services import BmadService, loaded_bmad_core
from app.config import Settings
from app.core.exceptions import ConflictError, NotFoundError
from app.db.pages import keyset_page
from app.events.models import Event
from app.events.services import EventService
from app.projects.models import Project, ProjectStatus
from app.tasks.models import AgentTask, AgentType
from app.tasks.schemas import TaskCreate
from app.tasks.services import TaskService
from app.workflows.models import ExecutionStatus, WorkflowExecution
from app.workflows.services import ExecutionService

CHAT_PREFIX = "chat:"  # the step_id of an orchestrator task answering the chat message with this event id
CHAT_EVENT_TYPES = ("user_chat_message", "agent_chat_message")
DEFAULT_WORKFLOW = "botarmy-sdlc"
CONTEXT_DOCUMENTS = 10


def is_chat_task(task: AgentTask) -> bool:
    return (task.step_id or "").startswith(CHAT_PREFIX)


class ChatService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.events = EventService.of(session)

    async def post(self, project_id: UUID, text: str, *, actor: str) -> tuple[Event, AgentTask]:
        """Record the message and the orchestrator task that answers it (no commit; enqueue the task after)."""
        project = await self.session.get(Project, project_id)
        if project is None:
            raise NotFoundError(f"Project {project_id} does not exist.")
        if project.status not in (ProjectStatus.ACTIVE.value, ProjectStatus.COMPLETED.value):
            raise ConflictError(f"Project {project_id} is {project.status}; resume it to talk to its agents.")
        message = await self.events.record(
            "user_chat_message", project_id=project_id, actor=actor, data={"text": text, "author": actor}
        )
        documents = select(Artifact.id).where(
            Artifact.project_id == project_id,
            Artifact.granularity == Granularity.DOCUMENT.value,
            Artifact.deleted_at.is_(None),
        )
        context = list(await self.session.scalars(documents.order_by(Artifact.id.desc()).limit(CONTEXT_DOCUMENTS)))
        instructions = (
            f"The product owner writes in the project chat:\n{text}\n\n"
            "Answer them in your summary, from the project's documents in your context where they ask about "
            "the work. Put what you need to know from them in open_questions. If the message is a new product "
            "idea to build, set the flag start_workflow."
        )
        task = await TaskService(session=self.session).create_task(
            project_id,
            TaskCreate(agent_type=AgentType.ORCHESTRATOR, instructions=instructions, context_ids=context),
            default_timeout=self.settings.models.task_timeout_seconds,
            actor=actor,
        )
        # The message's id names the task that answers it: ids are given in commit order, so it is
        # written last, and only this transaction's own new task row changes after it.
        await self.events.assign_ids()
        task.step_id = f"{CHAT_PREFIX}{message.id}"
        return message, task

    async def answered(self, task: AgentTask, answer: AgentAnswer) -> list[UUID]:
        """The orchestrator's answer to a chat message, as chat events (same transaction as the task)."""
        in_reply_to = int((task.step_id or CHAT_PREFIX + "0").removeprefix(CHAT_PREFIX))
        await self._say(task, in_reply_to, "response", answer.summary, requires_response=bool(answer.open_questions))
        for question in answer.open_questions:
            await self._say(task, in_reply_to, "question", question, requires_response=True)
        if not answer.flags.get("start_workflow"):
            return []
        return await self._start_workflow(task, in_reply_to)

    async def _say(
        self,
        task: AgentTask,
        in_reply_to: int,
        message_type: str,
        text: str,
        *,
        requires_response: bool,
        execution_id: UUID | None = None,
    ) -> None:
        """One `agent_chat_message` of the orchestrator answering the chat message `in_reply_to`."""
        data: dict[str, Any] = {
            "agent_type": AgentType.ORCHESTRATOR.value,
            "task_id": str(task.id),
            "message_type": message_type,
            "text": text,
            "requires_response": requires_response,
            "in_reply_to": in_reply_to,
        }
        if execution_id is not None:
            data["execution_id"] = str(execution_id)
        await self.events.record(
            "agent_chat_message", project_id=task.project_id, task_id=task.id, actor="agent:orchestrator", data=data
        )

    async def _start_workflow(self, task: AgentTask, in_reply_to: int) -> list[UUID]:
        running = select(WorkflowExecution.id).where(
            WorkflowExecution.project_id == task.project_id,
            WorkflowExecution.status.in_(
                [ExecutionStatus.RUNNING.value, ExecutionStatus.WAITING_FOR_HITL.value, ExecutionStatus.PAUSED.value]
            ),
        )
        project = await self.session.get(Project, task.project_id)
        message = await self.session.get(Event, in_reply_to)
        if project is None or message is None:
            return []
        follow_ups: list[UUID] = []
        execution_id: UUID | None = None
        if project.status != ProjectStatus.ACTIVE.value:
            text = f"The project is {project.status}; a new idea needs a new project (or resume this one)."
        elif await self.session.scalar(running.limit(1)) is not None:
            text = "A workflow already runs for this project; steer it with the HITL answers or pause it first."
        else:
            core = await loaded_bmad_core(self.settings.app.bmad_dir)
            workflow = BmadService(core).workflow(DEFAULT_WORKFLOW)
            inputs = {"idea": message.data.get("text", ""), "task_timeout_seconds": task.timeout_seconds}
            execution, follow_ups = await ExecutionService(self.session, self.settings.hitl).start(
                project, workflow, inputs, actor="agent:orchestrator", core=core
            )
            text = f"Started the {workflow.name} on this idea (execution {execution.id})."
            execution_id = execution.id
        await self._say(task, in_reply_to, "info", text, requires_response=False, execution_id=execution_id)
        return follow_ups

    async def conversation(self, project_id: UUID, *, limit: int, cursor: int | None) -> tuple[list[Event], int | None]:
        statement = select(Event).where(Event.project_id == project_id, Event.event_type.in_(CHAT_EVENT_TYPES))
        return await keyset_page(self.session, statement, Event.id, limit=limit, after=cursor)

"""`POST|GET /api/v1/projects/{id}/messages`: the project chat (see `app/chat/services.py`)."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter
from msgspec import Meta
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.dependencies import RuntimeDependency, SettingsDependency
from app.chat.services import ChatService
from app.core.runtime import Runtime
from app.core.schema import DEFAULT_PAGE_LIMIT, EVENT_CURSOR, MAX_PAGE_LIMIT, InputStruct, Page, Struct, event_cursor
from app.core.security import Principal, Role, needs
from app.events.models import Event
from app.projects.services import visible_project
from app.runs.jobs import commit_and_dispatch
from app.tokens.revoked import TokenRevokedError
from app.tokens.services import TokenService


class MessageIn(InputStruct):
    message: Annotated[str, Meta(min_length=1, max_length=20_000)]


class MessageAccepted(Struct):
    message_id: int
    task_id: UUID
    status: Literal["submitted"] = "submitted"


class ChatMessage(Struct):
    id: int
    # `user` for the product owner's messages; the agent type for agents'.
    sender: str
    author: str | None
    # user messages: `message`; agents': info, question, response or thinking.
    message_type: str
    text: str
    requires_response: bool
    in_reply_to: int | None
    task_id: UUID | None
    timestamp: datetime.datetime


def to_message(event: Event) -> ChatMessage:
    data: dict[str, Any] = event.data
    user = event.event_type == "user_chat_message"
    return ChatMessage(
        id=event.id,
        sender="user" if user else str(data.get("agent_type", "orchestrator")),
        author=event.actor,
        message_type="message" if user else str(data.get("message_type", "info")),
        text=str(data.get("text", "")),
        requires_response=bool(data.get("requires_response", False)),
        in_reply_to=data.get("in_reply_to"),
        task_id=event.task_id,
        timestamp=event.created_at,
    )


async def post_message(
    runtime: Runtime, principal: Principal, project_id: UUID, text: str, *, check_token: bool = False
) -> MessageAccepted:
    """Store the message and its answering task, commit, then queue the task (HTTP and WebSocket).

    `check_token`: check in the same transaction that the token is still valid (a WebSocket's
    message: the token was checked when the socket opened); TokenRevokedError if not."""
    async with runtime.session() as session:
        if check_token and not await TokenService(session=session).is_active(principal.token_id):
            raise TokenRevokedError
        message, task = await ChatService(session, runtime.settings).post(project_id, text, actor=principal.name)
        accepted = MessageAccepted(message_id=message.id, task_id=task.id)
        await commit_and_dispatch(runtime, session, [task.id])
    return accepted


class ChatController(Controller):
    path = "/api/v1/projects/{project_id:uuid}/messages"
    tags = ["chat"]
    opt = needs(Role.VIEWER)

    @post("/", operation_id="PostChatMessage", status_code=202, opt=needs(Role.PRODUCT_OWNER))
    async def post(
        self,
        runtime: RuntimeDependency,
        principal: NamedDependency[Principal],
        project_id: FromPath[UUID],
        data: JSONBody[MessageIn],
    ) -> MessageAccepted:
        """The orchestrator answers as `agent_chat_message` events; a new idea may start the default workflow."""
        return await post_message(runtime, principal, project_id, data.message)

    @get("/", operation_id="ListChatMessages")
    async def list_messages(
        self,
        app_settings: SettingsDependency,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        project_id: FromPath[UUID],
        limit: int = Parameter(default=DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
        cursor: str | None = Parameter(
            default=None, pattern=EVENT_CURSOR, description="next_cursor of the previous page"
        ),
    ) -> Page[ChatMessage]:
        await visible_project(db_session, principal, project_id)
        chat = ChatService(db_session, app_settings)
        rows, next_cursor = await chat.conversation(project_id, limit=limit, cursor=event_cursor(cursor))
        return Page(items=[to_message(row) for row in rows], next_cursor=str(next_cursor) if next_cursor else None)

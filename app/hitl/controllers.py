"""Answering HITL requests: each takes the actions in its `options`, phase gates only `approve` for now.

The full HITL (issue 7) adds reject and amend for gates and task questions, expiry and history.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from msgspec import Meta
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.exceptions import ConflictError, InvalidInputError, NotFoundError
from app.core.schema import InputStruct, Struct
from app.core.security import Principal, Role, needs
from app.events.services import EventService
from app.hitl.models import HitlHistory, HitlKind, HitlRequest, HitlStatus
from app.tasks.jobs import agent_task_enqueuer
from app.tasks.services import TaskService, dispatch_all
from app.worker.runtime import Runtime
from app.workflows.services import ExecutionService

ANSWERED = {"approve": HitlStatus.APPROVED, "reject": HitlStatus.REJECTED, "amend": HitlStatus.AMENDED}


class HitlResponse(InputStruct):
    action: Literal["approve", "reject", "amend"]
    comment: Annotated[str, Meta(max_length=20_000)] | None = None


class HitlAnswered(Struct):
    request_id: UUID
    status: str
    responder: str
    responded_at: datetime.datetime


class HitlController(Controller):
    path = "/api/v1/hitl"
    tags = ["hitl"]
    opt = needs(Role.PRODUCT_OWNER)

    @post("/{request_id:uuid}/respond", operation_id="RespondToHitlRequest", status_code=200)
    async def respond(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        request_id: FromPath[UUID],
        data: JSONBody[HitlResponse],
    ) -> HitlAnswered:
        statement = select(HitlRequest).where(HitlRequest.id == request_id).with_for_update()
        hitl: HitlRequest | None = await db_session.scalar(statement)
        if hitl is None or not principal.can_see(hitl.project_id):
            raise NotFoundError(f"HITL request {request_id} does not exist.")
        if hitl.status != HitlStatus.PENDING.value:
            raise ConflictError(f"HITL request {request_id} is already {hitl.status}.", extra={"status": hitl.status})
        if data.action not in hitl.options or (data.action != "approve" and hitl.kind == HitlKind.PHASE_APPROVAL):
            allowed = ["approve"] if hitl.kind == HitlKind.PHASE_APPROVAL else hitl.options
            raise InvalidInputError(f"action: {data.action!r} is not possible here; one of {', '.join(allowed)}")
        answered_at = datetime.datetime.now(datetime.UTC)
        hitl.status = ANSWERED[data.action].value
        hitl.responder = principal.name
        hitl.response_comment = data.comment
        hitl.responded_at = answered_at
        db_session.add(HitlHistory(request_id=hitl.id, action=data.action, actor=principal.name, comment=data.comment))
        await EventService(session=db_session).record(
            "hitl_request_responded",
            project_id=hitl.project_id,
            task_id=hitl.task_id,
            actor=principal.name,
            data={"request_id": str(hitl.id), "action": data.action, "responder": principal.name},
        )
        follow_ups = await ExecutionService(db_session).on_hitl_answered(
            hitl, data.action, actor=principal.name, comment=data.comment
        )
        await db_session.commit()
        runtime: Runtime = request.app.state.runtime
        await dispatch_all(TaskService(session=db_session), follow_ups, agent_task_enqueuer(runtime.broker))
        return HitlAnswered(request_id=hitl.id, status=hitl.status, responder=principal.name, responded_at=answered_at)

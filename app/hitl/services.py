"""Opening requests for a human decision (what an answer does is in `app/runs/decisions.py`)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from uuid import UUID

from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService

from app.config import HitlSettings
from app.db.repository import Repository
from app.events.services import EventService
from app.hitl.models import HitlHistory, HitlKind, HitlRequest, HoldRef, Urgency


class HitlService(SQLAlchemyAsyncRepositoryService[HitlRequest]):
    class Repo(Repository[HitlRequest]):
        model_type = HitlRequest

    repository_type = Repo

    @property
    def events(self) -> EventService:
        return EventService.of(self.repository.session)

    async def open_request(
        self,
        *,
        policy: HitlSettings,
        project_id: UUID,
        kind: HitlKind,
        question: str,
        task_id: UUID | None = None,
        options: Sequence[str] = ("approve", "reject", "amend"),
        artifact_ids: Sequence[UUID] = (),
        urgency: Urgency = Urgency.MEDIUM,
        assigned_role: str = "product_owner",
        workflow_execution_id: UUID | None = None,
        hold: HoldRef | None = None,
        actor: str = "system",
    ) -> HitlRequest:
        """A pending request, its first history entry and its event (no commit).

        `hold`: what it holds up (a gate, a condition, a task's step, ...). It expires after the
        timeout `policy` gives its kind, with the expiry action of its kind.
        """
        session = self.repository.session
        expires_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=policy.timeout_for(kind.value))
        request = HitlRequest(
            project_id=project_id,
            task_id=task_id,
            workflow_execution_id=workflow_execution_id,
            hold_kind=None if hold is None else hold.kind.value,
            hold_ref=None if hold is None else hold.ref,
            kind=kind.value,
            question=question,
            options=list(options),
            artifact_ids=[str(artifact_id) for artifact_id in artifact_ids],
            urgency=urgency.value,
            assigned_role=assigned_role,
            expires_at=expires_at,
            expiry_action=policy.expiry_action_for(kind.value),
        )
        session.add(request)
        await session.flush()
        session.add(HitlHistory(request_id=request.id, action="created", actor=actor, data={"kind": kind.value}))
        await self.events.record(
            "hitl_request_created",
            project_id=project_id,
            task_id=task_id,
            actor=actor,
            data={
                "request_id": str(request.id),
                "kind": kind.value,
                "question": question,
                "urgency": urgency.value,
                "expires_at": expires_at.isoformat(),
                "task_id": str(task_id) if task_id else None,
                "assigned_role": assigned_role,
            },
        )
        return request

"""Disagreements between agents: the orchestrator mediates, then a person decides.

An agent that reports `conflicts` (its work contradicts an artifact it was given) stores its work
but does not complete: its task waits while an orchestrator task mediates, with both positions
in its context. If the orchestrator settles it (its answer reports no conflict), the disputed
task completes with its result. If not, it tries again, up to `MAX_ROUNDS` times; then a
`conflict` HITL request shows both positions, their reasoning and evidence, and the person
approves the agent's result, rejects it (a redo with the comment) or amends the document.
Everything happens in the transaction that finishes the reporting or the mediating task.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.artifacts.models import Artifact
from app.config import HitlSettings
from app.hitl.models import HitlKind, HoldRef, Urgency
from app.runs.provider import services
from app.tasks.models import AgentTask, AgentType, TaskStatus
from app.tasks.schemas import TaskCreate
from app.workflows.services import ExecutionService

MAX_ROUNDS = 3


def _positions(agent: str, conflicts: list[dict[str, Any]]) -> str:
    lines = []
    for conflict in conflicts:
        evidence = "; ".join(conflict.get("evidence", [])) or "none given"
        lines.append(
            f'- On "{conflict["topic"]}", the {agent}: {conflict["position"]}\n'
            f"  Reasoning: {conflict['reasoning']}\n  Evidence: {evidence}"
        )
    return "\n".join(lines)


async def _disputed_ids(session: AsyncSession, task: AgentTask, conflicts: list[dict[str, Any]]) -> list[UUID]:
    """The artifacts the agent contradicts (those of its context it named, else its whole context)."""
    context = [UUID(value) for value in task.context_ids]
    named = {str(conflict.get("artifact_id") or "").lower() for conflict in conflicts}
    chosen = [artifact_id for artifact_id in context if str(artifact_id) in named] or context
    live = select(Artifact.id).where(Artifact.id.in_(chosen), Artifact.deleted_at.is_(None))
    found = set(await session.scalars(live)) if chosen else set()
    return [artifact_id for artifact_id in chosen if artifact_id in found]


async def start_mediation(session: AsyncSession, disputed: AgentTask, round_number: int) -> AgentTask:
    """An orchestrator task to reconcile what `disputed` reported (no commit; enqueue it after)."""
    output = disputed.output or {}
    conflicts: list[dict[str, Any]] = output.get("conflicts", [])
    produced = [UUID(value) for value in output.get("artifact_ids", [])]
    instructions = (
        f"Mediate a disagreement (round {round_number} of {MAX_ROUNDS}). The {disputed.agent_type}'s work "
        f"contradicts artifacts of its context:\n{_positions(disputed.agent_type, conflicts)}\n"
        "Both sides are in your context. Reconcile them and state the resolution in your summary; report a "
        "conflict only if it cannot be settled without a person.\n"
        f"The {disputed.agent_type}'s task was: {disputed.instructions}"
    )
    context_ids = list(dict.fromkeys([*await _disputed_ids(session, disputed, conflicts), *produced]))
    return await services(session).tasks.create_task(
        disputed.project_id,
        TaskCreate(agent_type=AgentType.ORCHESTRATOR, instructions=instructions[:20_000], context_ids=context_ids),
        default_timeout=disputed.timeout_seconds,
        actor="orchestrator",
        mediates=disputed.id,
    )


async def after_mediation(
    session: AsyncSession, policy: HitlSettings, mediation: AgentTask, *, unresolved: bool, summary: str
) -> list[UUID]:
    """The orchestrator answered: settle the disputed task, mediate again, or ask a person."""
    if mediation.mediates is None:
        return []
    disputed = await session.scalar(select(AgentTask).where(AgentTask.id == mediation.mediates).with_for_update())
    if disputed is None or disputed.status != TaskStatus.WAITING_FOR_HITL.value:
        return []  # cancelled, stopped or answered meanwhile
    events = services(session).events
    tasks = services(session).tasks
    if not unresolved:
        settled = await tasks.accept_parked(disputed.id, actor="orchestrator")
        await events.record(
            "conflict_resolved",
            project_id=disputed.project_id,
            task_id=disputed.id,
            actor="orchestrator",
            data={"task_id": str(disputed.id), "mediation_task_id": str(mediation.id), "resolution": summary},
        )
        return await ExecutionService(session, policy).on_task_finished(settled) if settled is not None else []
    rounds = await session.scalar(select(func.count()).where(AgentTask.mediates == disputed.id)) or 0
    if rounds < MAX_ROUNDS:
        again = await start_mediation(session, disputed, rounds + 1)
        return [again.id]
    output = disputed.output or {}
    conflicts: list[dict[str, Any]] = output.get("conflicts", [])
    contradicted = await _disputed_ids(session, disputed, conflicts)
    documents = {
        artifact.id: artifact
        for artifact in await session.scalars(select(Artifact).where(Artifact.id.in_(contradicted)))
    }
    other_side = "\n".join(
        f"- The {artifact.artifact_type} '{artifact.title}' (by {artifact.source_agent or 'a person'}, "
        f"{artifact.id}), as written."
        for artifact in documents.values()
    )
    question = (
        f"The {disputed.agent_type} and the documents it was given disagree, and the orchestrator could not "
        f"settle it in {MAX_ROUNDS} rounds.\n"
        f"Position of the {disputed.agent_type}:\n{_positions(disputed.agent_type, conflicts)}\n"
        f"The other position:\n{other_side or '- The documents of its context, as written.'}\n"
        f"The orchestrator's last attempt: {summary}\n"
        f"Approve to take the {disputed.agent_type}'s result, reject with a comment to have it redone, or "
        "amend the document."
    )
    produced = [UUID(value) for value in output.get("artifact_ids", [])]
    await services(session).hitl.open_request(
        policy=policy,
        project_id=disputed.project_id,
        kind=HitlKind.CONFLICT,
        question=question[:20_000],
        task_id=disputed.id,
        artifact_ids=[*documents, *produced],
        urgency=Urgency.HIGH,
        workflow_execution_id=disputed.workflow_execution_id,
        hold=HoldRef.of_step(disputed.step_id),
        actor="orchestrator",
    )
    return []

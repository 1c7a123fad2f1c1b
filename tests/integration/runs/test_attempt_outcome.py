"""Every way an attempt ends goes through `on_attempt_outcome`: what each outcome leaves behind.

On a real database of each mode: the task row is written as its caller would (completed, failed,
waiting for a person), then the outcome; checked are the request opened, the agent's status, the
events and the follow-up tasks, all in the caller's one transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from sqlalchemy import select

from app.agents.models import AgentState, AgentStatus
from app.agents.outputs import AgentAnswer, Disagreement, ProducedArtifact
from app.artifacts.models import ArtifactType
from app.config import Settings
from app.db.engine import build_db_config, upgrade_database_async
from app.events.models import Event
from app.hitl.models import HitlKind, HitlRequest, HoldKind, HoldRef, Urgency
from app.projects.models import Project
from app.runs.outcome import AttemptOutcome, ErrorNotice, HumanHold, on_attempt_outcome
from app.tasks.models import AgentTask, TaskStatus


@pytest.fixture
async def database(isolated_settings: Settings) -> AsyncIterator[SQLAlchemyAsyncConfig]:
    await upgrade_database_async(isolated_settings.db)
    config = build_db_config(isolated_settings.db)
    try:
        yield config
    finally:
        await config.get_engine().dispose()


async def new_task(config: SQLAlchemyAsyncConfig, status: TaskStatus, **fields: Any) -> AgentTask:
    async with config.get_session() as session:
        project = Project(name="outcomes", description="")
        session.add(project)
        await session.flush()
        task = AgentTask(
            project_id=project.id, agent_type="architect", instructions="Design it", status=status.value, **fields
        )
        session.add(task)
        await session.commit()
        return task


async def finish(
    config: SQLAlchemyAsyncConfig, settings: Settings, task: AgentTask, outcome: AttemptOutcome
) -> tuple[HitlRequest | None, list[UUID]]:
    async with config.get_session() as session:
        row = await session.get(AgentTask, task.id)
        assert row is not None
        request, follow_ups = await on_attempt_outcome(session, settings, row, outcome)
        await session.commit()
    return request, follow_ups


async def agent_row(config: SQLAlchemyAsyncConfig, project_id: UUID) -> AgentStatus:
    async with config.get_session() as session:
        row = await session.scalar(select(AgentStatus).where(AgentStatus.project_id == project_id))
    assert row is not None
    return row


async def events_of(config: SQLAlchemyAsyncConfig, project_id: UUID) -> list[Event]:
    async with config.get_session() as session:
        return list(await session.scalars(select(Event).where(Event.project_id == project_id).order_by(Event.id)))


def answer(**fields: Any) -> AgentAnswer:
    produced = ProducedArtifact(artifact_type=ArtifactType.AGENT_OUTPUT, title="Notes", content={"answer": "ok"})
    return AgentAnswer(summary="Done.", artifacts=[produced], confidence=0.9, **fields)


async def test_a_failure_is_put_to_a_person_with_an_error_notice(
    database: SQLAlchemyAsyncConfig, isolated_settings: Settings
) -> None:
    task = await new_task(database, TaskStatus.WAITING_FOR_HITL, error="openai: down")
    hold = HumanHold(
        kind=HitlKind.TASK_FAILURE,
        question="It failed. Approve to try again.",
        options=("approve", "reject"),
        urgency=Urgency.HIGH,
        actor="worker",
    )
    outcome = AttemptOutcome(
        agent_state=AgentState.ERROR, hold=hold, notice=ErrorNotice(message="openai: down", code="unavailable")
    )
    request, follow_ups = await finish(database, isolated_settings, task, outcome)
    assert request is not None and follow_ups == []
    assert (request.kind, request.options, request.urgency, request.task_id) == (
        "task_failure",
        ["approve", "reject"],
        "high",
        task.id,
    )
    agent = await agent_row(database, task.project_id)
    assert (agent.status, agent.current_task_id) == ("error", task.id)
    kinds = [event.event_type for event in await events_of(database, task.project_id)]
    assert kinds[-3:] == ["hitl_request_created", "agent_status_changed", "error_notification"], kinds


async def test_a_time_out_leaves_the_agent_in_error_without_a_task(
    database: SQLAlchemyAsyncConfig, isolated_settings: Settings
) -> None:
    task = await new_task(database, TaskStatus.FAILED, error="timed out")
    outcome = AttemptOutcome(
        agent_state=AgentState.ERROR,
        notice=ErrorNotice(message="timed out", code="timed_out"),
        agent_names_task=False,
    )
    request, follow_ups = await finish(database, isolated_settings, task, outcome)
    assert (request, follow_ups) == (None, [])
    agent = await agent_row(database, task.project_id)
    assert (agent.status, agent.current_task_id) == ("error", None)
    errors = [event for event in await events_of(database, task.project_id) if event.event_type == "error_notification"]
    assert [event.data["error_code"] for event in errors] == ["timed_out"]


async def test_a_completed_answer_leaves_the_agent_idle_and_asks_nobody(
    database: SQLAlchemyAsyncConfig, isolated_settings: Settings
) -> None:
    task = await new_task(database, TaskStatus.COMPLETED)
    request, follow_ups = await finish(
        database, isolated_settings, task, AttemptOutcome(agent_state=AgentState.IDLE, answer=answer())
    )
    assert (request, follow_ups) == (None, [])
    assert (await agent_row(database, task.project_id)).status == "idle"
    async with database.get_session() as session:
        assert list(await session.scalars(select(HitlRequest).where(HitlRequest.task_id == task.id))) == []


async def test_an_agents_questions_open_a_request_and_reach_the_chat(
    database: SQLAlchemyAsyncConfig, isolated_settings: Settings
) -> None:
    task = await new_task(database, TaskStatus.WAITING_FOR_HITL, step_id="3")
    questions = ("Which cloud?", "Which region?")
    hold = HumanHold(
        kind=HitlKind.LOW_CONFIDENCE, question="\n".join(questions), actor="agent:architect", chat_questions=questions
    )
    outcome = AttemptOutcome(agent_state=AgentState.WAITING_FOR_HITL, hold=hold, answer=answer())
    request, _ = await finish(database, isolated_settings, task, outcome)
    assert request is not None and request.hold == HoldRef(
        HoldKind.STEP, "3"
    )  # the task's own step, when the hold names none
    events = await events_of(database, task.project_id)
    chat = [e for e in events if e.event_type == "agent_chat_message"]
    assert chat, [e.event_type for e in events]
    assert [(e.data["text"], e.data["request_id"]) for e in chat] == [(q, str(request.id)) for q in questions]
    agent = await agent_row(database, task.project_id)
    assert (agent.status, agent.current_task_id) == ("waiting_for_hitl", task.id)


async def test_a_dispute_goes_to_the_orchestrator_first(
    database: SQLAlchemyAsyncConfig, isolated_settings: Settings
) -> None:
    conflict = Disagreement(topic="Database", position="SQLite suffices", reasoning="One user at a time")
    output = {"conflicts": [{"topic": "Database", "position": "SQLite suffices", "reasoning": "One user"}]}
    task = await new_task(database, TaskStatus.WAITING_FOR_HITL, output=output)
    outcome = AttemptOutcome(agent_state=AgentState.WAITING_FOR_HITL, answer=answer(conflicts=[conflict]), dispute=True)
    request, follow_ups = await finish(database, isolated_settings, task, outcome)
    assert request is None and len(follow_ups) == 1
    async with database.get_session() as session:
        mediation = await session.get(AgentTask, follow_ups[0])
    assert mediation is not None
    assert (mediation.agent_type, mediation.mediates, mediation.status) == ("orchestrator", task.id, "pending")

"""Human in the loop on both modes: triggers, answers and their effects, races, bulk, expiry, reads.

Tests that need HITL settings of their own get an app (and, in services mode, a worker) with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.config import Settings, load_settings
from app.db.engine import build_db_config
from app.events.models import Event
from tests import factories
from tests.helpers import app_client, eventually, issue_token, start_worker, task_status, wait_for_task

ClientFactory = Callable[[dict[str, str]], contextlib.AbstractAsyncContextManager[tuple[AsyncClient, Settings]]]


@pytest.fixture
def make_client(mode: str, request: pytest.FixtureRequest, tmp_path: Path) -> ClientFactory:
    """An app with extra settings; in services mode on a database of its own, with its own worker."""

    base: dict[str, str] = request.getfixturevalue("embedded_env" if mode == "embedded" else "own_services_env")

    @contextlib.asynccontextmanager
    async def factory(overrides: dict[str, str]) -> AsyncIterator[tuple[AsyncClient, Settings]]:
        env = {**base, **overrides}
        settings = load_settings(env)
        worker = start_worker(env, tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log") if mode == "services" else None
        try:
            async with app_client(settings, timeout=30) as client:
                yield client, settings
        finally:
            if worker is not None:
                worker.stop()

    return factory


new_project = functools.partial(factories.new_project, name="hitl", oversight_level="low")


async def submit(client: AsyncClient, project_id: str, agent_type: str, instructions: str) -> str:
    response = await client.post(
        f"/api/v1/projects/{project_id}/tasks", json={"agent_type": agent_type, "instructions": instructions}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["task_id"])


async def requests_of(client: AsyncClient, project_id: str, **filters: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/hitl/project/{project_id}/requests", params=filters)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def parked(client: AsyncClient, project_id: str, instructions: str, agent: str = "architect") -> dict[str, Any]:
    """A task that stopped on a question, and its request."""
    task_id = await submit(client, project_id, agent, instructions)
    await wait_for_task(client, task_id, "waiting_for_hitl")
    found = await eventually(
        lambda: requests_of(client, project_id, status="pending"),
        lambda items: any(item["task_id"] == task_id for item in items),
    )
    request = next(item for item in found if item["task_id"] == task_id)
    return {"task_id": task_id, **request}


async def task_ids(client: AsyncClient, project_id: str) -> list[str]:
    rows = (await client.get(f"/api/v1/projects/{project_id}/status")).json()["tasks"]
    return [row["task_id"] for row in rows]


async def event_types(settings: Settings, project_id: str) -> list[str]:
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            statement = select(Event.event_type).where(Event.project_id == uuid.UUID(project_id)).order_by(Event.id)
            return list(await session.scalars(statement))
    finally:
        await config.get_engine().dispose()


async def respond(client: AsyncClient, request_id: str, **body: Any) -> Any:
    return await client.post(f"/api/v1/hitl/{request_id}/respond", json=body)


# -- triggers ---------------------------------------------------------------------------------


async def test_low_confidence_waits_for_a_human_and_its_context_shows_why(client: AsyncClient) -> None:
    # The offline agents are 90 % sure; this project asks for 95 %.
    project_id = await new_project(client, settings={"confidence_threshold": 0.95})
    request = await parked(client, project_id, "Design a ledger")
    assert request["kind"] == "low_confidence"
    assert "90% sure" in request["question"]
    context = (await client.get(f"/api/v1/hitl/{request['request_id']}/context")).json()
    assert context["task"]["id"] == request["task_id"]
    assert context["task"]["reasoning"]["confidence"] == 0.9
    assert {artifact["artifact_type"] for artifact in context["artifacts"]} == {
        "system_architecture",
        "implementation_plan",
    }
    assert all(artifact["content"] for artifact in context["artifacts"])
    full = (await client.get(f"/api/v1/hitl/{request['request_id']}")).json()
    assert full["status"] == "pending"
    assert full["expires_at"] is not None
    assert [entry["action"] for entry in full["history"]] == ["created"]
    # A threshold that is not a number from 0 to 1 is refused.
    for bad in (1.5, "high", True):
        response = await client.post("/api/v1/projects", json={"name": "x", "settings": {"confidence_threshold": bad}})
        assert response.status_code == 400, response.text
        assert "confidence_threshold" in response.text


# -- answers to a parked task -----------------------------------------------------------------


async def test_approve_accepts_the_result(client: AsyncClient) -> None:
    project_id = await new_project(client)
    request = await parked(client, project_id, "Design [[offline:question=Which cloud?]]")
    answered = await respond(client, request["request_id"], action="approve", comment="any cloud")
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert (body["status"], body["responder"], body["response_comment"]) == ("approved", body["responder"], "any cloud")
    assert [entry["action"] for entry in body["history"]] == ["created", "approve"]
    task = await wait_for_task(client, request["task_id"], "completed")
    assert task["output"]["artifact_ids"]


async def test_reject_redoes_the_task_with_the_comment_as_feedback(client: AsyncClient) -> None:
    project_id = await new_project(client)
    request = await parked(client, project_id, "Design [[offline:question=Which cloud?]]")
    assert (await respond(client, request["request_id"], action="reject")).status_code == 422  # no comment
    answered = await respond(client, request["request_id"], action="reject", comment="use the EU region only")
    assert answered.status_code == 200, answered.text
    old = await task_status(client, request["task_id"])
    assert old["status"] == "cancelled"
    redo_id = next(task_id for task_id in await task_ids(client, project_id) if task_id != request["task_id"])
    redo = await task_status(client, redo_id)
    assert (redo["redo_of"], redo["feedback"]) == (request["task_id"], "use the EU region only")
    # The redo asks the same question again (the directive is in its instructions) and used the feedback.
    redone = await wait_for_task(client, redo_id, "waiting_for_hitl")
    artifact = (await client.get(f"/api/v1/artifacts/{redone['output']['artifact_ids'][0]}")).json()
    assert "revised: use the EU region only" in artifact["title"]


async def test_amend_stores_the_human_version_and_accepts(client: AsyncClient) -> None:
    project_id = await new_project(client)
    request = await parked(client, project_id, "Specify [[offline:question=Who pays?]]", agent="analyst")
    about = (await client.get(f"/api/v1/hitl/{request['request_id']}")).json()["artifact_ids"]
    artifacts = [(await client.get(f"/api/v1/artifacts/{artifact_id}")).json() for artifact_id in about]
    original = next(a for a in artifacts if a["artifact_type"] == "software_specification")
    artifact_id = original["id"]
    amended = {**original["content"], "vision": "Families pay nothing; schools pay per seat."}
    target = {"artifact_id": artifact_id}
    bad = await respond(
        client, request["request_id"], action="amend", comment="pricing", amended_content={"vision": 3}, response=target
    )
    assert bad.status_code == 422, bad.text  # checked against the specification's schema
    elsewhere = await respond(
        client,
        request["request_id"],
        action="amend",
        comment="pricing",
        amended_content=amended,
        response={"artifact_id": str(uuid.uuid4())},
    )
    assert elsewhere.status_code == 422, elsewhere.text
    assert "artifact_id" in elsewhere.text
    answered = await respond(
        client,
        request["request_id"],
        action="amend",
        comment="pricing decided",
        amended_content=amended,
        response=target,
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "amended"
    await wait_for_task(client, request["task_id"], "completed")
    versions = (await client.get(f"/api/v1/artifacts/{artifact_id}/versions")).json()["items"]
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[-1]["changed_by"].startswith("human:")
    latest = (await client.get(f"/api/v1/artifacts/{artifact_id}")).json()
    assert latest["content"]["vision"] == "Families pay nothing; schools pay per seat."


async def test_rejections_past_the_limit_escalate(make_client: ClientFactory) -> None:
    async with make_client({"BOTARMY_HITL_MAX_REDOS": "1"}) as (client, _):
        project_id = await new_project(client)
        first = await parked(client, project_id, "Design [[offline:question=Which cloud?]]")
        assert (await respond(client, first["request_id"], action="reject", comment="again")).status_code == 200
        second = await eventually(
            lambda: requests_of(client, project_id, status="pending"), lambda items: len(items) == 1, timeout=20
        )
        assert second[0]["request_id"] != first["request_id"]
        answered = await respond(client, second[0]["request_id"], action="reject", comment="and again")
        assert answered.status_code == 200
        escalated = (await requests_of(client, project_id, status="pending"))[0]
        assert (escalated["urgency"], escalated["assigned_role"]) == ("critical", "admin")
        assert escalated["question"].startswith("Escalated: ")
        assert (await requests_of(client, project_id, assigned_role="admin"))[0]["request_id"] == escalated[
            "request_id"
        ]
        # No third task: the escalation waits for an admin.
        assert len(await task_ids(client, project_id)) == 2


async def test_only_the_role_a_request_names_answers_it(client: AsyncClient, settings: Settings) -> None:
    """An escalation is for an admin: a product owner's answer (single or bulk) is 403 and changes nothing."""
    project_id = await new_project(client)
    path = f"/api/v1/hitl/project/{project_id}/requests"
    ask = {"question": "Ship it?", "urgency": "critical"}
    for_admin = (await client.post(path, json={**ask, "assigned_role": "admin"})).json()["request_id"]
    for_architect = (await client.post(path, json={**ask, "assigned_role": "architect"})).json()["request_id"]
    for_owner = (await client.post(path, json=ask)).json()["request_id"]
    # The unfiltered list in pages (its statements are built once), each summary whole.
    first = (await client.get(path, params={"limit": 2})).json()
    rest = (await client.get(path, params={"cursor": first["next_cursor"]})).json()
    listed = first["items"] + rest["items"]
    assert [item["request_id"] for item in listed] == [for_admin, for_architect, for_owner]
    assert rest["next_cursor"] is None
    # Past the last request the page is empty, not a 404: the project is still found by the same statement.
    past = await client.get(path, params={"cursor": for_owner})
    assert past.status_code == 200 and past.json() == {"items": [], "next_cursor": None}, past.text
    assert [(item["assigned_role"], item["status"], item["urgency"]) for item in listed] == [
        ("admin", "pending", "critical"),
        ("architect", "pending", "critical"),
        ("product_owner", "pending", "critical"),
    ]
    assert listed == (await client.get(path, params={"status": "pending"})).json()["items"]
    # A project without requests is an empty page; one that does not exist, a 404.
    empty = await new_project(client)
    assert (await client.get(f"/api/v1/hitl/project/{empty}/requests")).json() == {"items": [], "next_cursor": None}
    assert (await client.get(f"/api/v1/hitl/project/{uuid.uuid4()}/requests")).status_code == 404
    owner_token = await issue_token(settings, "product_owner", [uuid.UUID(project_id)])
    owner = {"Authorization": f"Bearer {owner_token}"}

    for request_id in (for_admin, for_architect):
        refused = await client.post(f"/api/v1/hitl/{request_id}/respond", json={"action": "approve"}, headers=owner)
        assert refused.status_code == 403, refused.text
        assert "admin" in refused.json()["detail"]
    bulk = await client.post(
        "/api/v1/hitl/bulk/approve", json={"request_ids": [for_admin, for_architect, for_owner]}, headers=owner
    )
    assert bulk.status_code == 200, bulk.text
    assert [(r["ok"], r["status_code"]) for r in bulk.json()["results"]] == [(False, 403), (False, 403), (True, 200)]
    for request_id in (for_admin, for_architect):
        untouched = (await client.get(f"/api/v1/hitl/{request_id}")).json()
        assert (untouched["status"], untouched["responder"]) == ("pending", None)
        assert [entry["action"] for entry in untouched["history"]] == ["created"]
    # An admin answers any of them.
    assert (await respond(client, for_admin, action="approve")).json()["status"] == "approved"
    assert (await respond(client, for_architect, action="reject", comment="no")).json()["status"] == "rejected"


# -- one answer wins ---------------------------------------------------------------------------


async def test_concurrent_answers_one_wins_the_rest_get_409(client: AsyncClient) -> None:
    project_id = await new_project(client)
    request = await parked(client, project_id, "Design [[offline:question=Which cloud?]]")
    bodies = [{"action": "approve"}] * 6 + [{"action": "reject", "comment": f"no {n}"} for n in range(6)]
    responses = await asyncio.gather(*(respond(client, request["request_id"], **body) for body in bodies))
    codes = sorted(response.status_code for response in responses)
    assert codes == [200] + [409] * 11, [r.text for r in responses]
    winner = next(response.json() for response in responses if response.status_code == 200)
    for response in responses:
        if response.status_code == 409:
            assert response.json()["extra"]["status"] == winner["status"]
    final = (await client.get(f"/api/v1/hitl/{request['request_id']}")).json()
    assert final["status"] == winner["status"]
    assert [entry["action"] for entry in final["history"]] == ["created", winner["history"][-1]["action"]]
    # Only the winner's effect happened: one task (approved) or one redo (rejected), never both.
    assert len(await task_ids(client, project_id)) == (1 if winner["status"] == "approved" else 2)


# -- bulk --------------------------------------------------------------------------------------


async def test_bulk_approve_reports_each_request(client: AsyncClient) -> None:
    project_id = await new_project(client)
    first = await parked(client, project_id, "Design one [[offline:question=A?]]")
    second = await parked(client, project_id, "Design two [[offline:question=B?]]")
    done = await parked(client, project_id, "Design three [[offline:question=C?]]")
    assert (await respond(client, done["request_id"], action="approve")).status_code == 200
    missing = str(uuid.uuid4())
    ids = [first["request_id"], second["request_id"], done["request_id"], missing]
    response = await client.post("/api/v1/hitl/bulk/approve", json={"request_ids": ids, "comment": "all fine"})
    assert response.status_code == 200, response.text
    results = {item["request_id"]: item for item in response.json()["results"]}
    assert [(results[i]["ok"], results[i]["status_code"]) for i in ids] == [
        (True, 200),
        (True, 200),
        (False, 409),
        (False, 404),
    ]
    for request in (first, second):
        await wait_for_task(client, request["task_id"], "completed")
    assert (await client.post("/api/v1/hitl/bulk/approve", json={"request_ids": []})).status_code == 400


# -- reads, filters, statistics, oversight -------------------------------------------------------


async def test_lists_filters_statistics_and_oversight(client: AsyncClient) -> None:
    project_id = await new_project(client)
    kept = await parked(client, project_id, "Design [[offline:question=A?]]")
    answered = await parked(client, project_id, "Design [[offline:question=B?]]")
    assert (await respond(client, answered["request_id"], action="approve")).status_code == 200

    assert [r["request_id"] for r in await requests_of(client, project_id, status="pending")] == [kept["request_id"]]
    assert [r["request_id"] for r in await requests_of(client, project_id, status="approved")] == [
        answered["request_id"]
    ]
    assert len(await requests_of(client, project_id, kind="low_confidence")) == 2
    assert await requests_of(client, project_id, kind="budget") == []
    for bad in ({"status": "maybe"}, {"kind": "gossip"}):
        response = await client.get(f"/api/v1/hitl/project/{project_id}/requests", params=bad)
        assert response.status_code == 400, response.text
    # Every page: in services mode the session's database holds the other tests' pending requests too.
    pending, cursor = [], None
    while True:
        page = (await client.get("/api/v1/hitl/pending", params={"cursor": cursor} if cursor else {})).json()
        pending += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    assert kept["request_id"] in [item["request_id"] for item in pending]
    assert answered["request_id"] not in [item["request_id"] for item in pending]

    stats = (await client.get("/api/v1/hitl/statistics", params={"project_id": project_id})).json()
    assert (stats["total"], stats["by_status"], stats["by_kind"]) == (
        2,
        {"pending": 1, "approved": 1},
        {"low_confidence": 2},
    )
    assert stats["approval_rate"] == 1.0
    assert stats["median_response_seconds"] >= 0

    path = f"/api/v1/hitl/project/{project_id}/oversight-level"
    assert (await client.get(path)).json() == {"project_id": project_id, "oversight_level": "low"}
    changed = await client.post(path, json={"oversight_level": "high"})
    assert changed.json()["oversight_level"] == "high"
    assert (await client.get(f"/api/v1/projects/{project_id}")).json()["oversight_level"] == "high"
    refused = await client.post(path, json={"oversight_level": "extreme"})
    assert refused.status_code == 400
    assert "oversight_level" in refused.text
    assert (await client.get(path)).json()["oversight_level"] == "high"
    assert (await client.get(f"/api/v1/hitl/{uuid.uuid4()}")).status_code == 404


# -- expiry ------------------------------------------------------------------------------------


async def test_expiry_warns_then_carries_out_the_action(make_client: ClientFactory) -> None:
    overrides = {
        "BOTARMY_HITL_TIMEOUTS": "low_confidence=2",
        "BOTARMY_HITL_WARNING_SECONDS": "1.5",
        "BOTARMY_HITL_EXPIRY_ACTIONS": "low_confidence=approve",
        "BOTARMY_SWEEP_INTERVAL_SECONDS": "0.3",
    }
    async with make_client(overrides) as (client, settings):
        project_id = await new_project(client)
        request = await parked(client, project_id, "Design [[offline:question=Which cloud?]]")
        assert request["status"] == "pending"
        # Nobody answers: a warning, then expiry, whose action (approve) completes the task.
        await wait_for_task(client, request["task_id"], "completed", timeout=20)
        expired = (await client.get(f"/api/v1/hitl/{request['request_id']}")).json()
        assert expired["status"] == "expired"
        assert [entry["action"] for entry in expired["history"]] == ["created", "expired"]
        assert expired["history"][-1]["data"] == {"action": "approve"}
        kinds = await event_types(settings, project_id)
        assert kinds.index("hitl_request_expiring") < kinds.index("hitl_request_expired")
        late = await respond(client, request["request_id"], action="approve")
        assert late.status_code == 409
        assert late.json()["extra"]["status"] == "expired"


async def test_expiry_can_escalate(make_client: ClientFactory) -> None:
    overrides = {"BOTARMY_HITL_TIMEOUTS": "low_confidence=1", "BOTARMY_HITL_EXPIRY_ACTIONS": "low_confidence=escalate"}
    async with make_client({**overrides, "BOTARMY_SWEEP_INTERVAL_SECONDS": "0.3"}) as (client, _):
        project_id = await new_project(client)
        request = await parked(client, project_id, "Design [[offline:question=Which cloud?]]")
        escalated = await eventually(
            lambda: requests_of(client, project_id, assigned_role="admin"), lambda items: len(items) == 1, timeout=20
        )
        assert escalated[0]["urgency"] == "critical"
        assert (await task_status(client, request["task_id"]))["status"] == "waiting_for_hitl"


async def test_a_request_past_its_expiry_is_expired_before_the_sweep(make_client: ClientFactory) -> None:
    # The sweep runs once at start and then not for ten minutes: only the deadline says it expired.
    overrides = {"BOTARMY_HITL_TIMEOUTS": "low_confidence=1", "BOTARMY_SWEEP_INTERVAL_SECONDS": "600"}
    async with make_client(overrides) as (client, _):
        project_id = await new_project(client)
        request = await parked(client, project_id, "Design [[offline:question=Which cloud?]]")
        await asyncio.sleep(1.2)
        assert (await client.get(f"/api/v1/hitl/{request['request_id']}")).json()["status"] == "expired"
        assert [r["request_id"] for r in await requests_of(client, project_id, status="expired")] == [
            request["request_id"]
        ]
        assert await requests_of(client, project_id, status="pending") == []
        response = await respond(client, request["request_id"], action="approve")
        assert response.status_code == 409
        assert (await task_status(client, request["task_id"]))["status"] == "waiting_for_hitl"


# -- emergency stop ----------------------------------------------------------------------------


async def test_emergency_stop_halts_running_work_and_resume_continues_it(client: AsyncClient) -> None:
    project_id = await new_project(client)
    started = await client.post(
        "/api/v1/executions",
        json={"project_id": project_id, "workflow_id": "botarmy-sdlc", "inputs": {"idea": "Slow [[offline:delay=2]]"}},
    )
    execution_id = started.json()["id"]
    running = await eventually(
        lambda: client.get(f"/api/v1/executions/{execution_id}"),
        lambda r: r.json()["steps"][0]["task_status"] == "working",
        timeout=20,
    )
    task_id = running.json()["steps"][0]["task_id"]

    stopped = await client.post(f"/api/v1/projects/{project_id}/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json() == {
        "project_id": project_id,
        "status": "paused",
        "executions_paused": 1,
        "tasks_halted": 1,
        "tasks_put_to_a_human": 0,
    }
    assert (await client.post(f"/api/v1/projects/{project_id}/stop")).status_code == 409
    assert (await client.get(f"/api/v1/executions/{execution_id}")).json()["status"] == "paused"
    # The running model call was abandoned; nothing of the project runs while it is stopped, not even new tasks.
    extra = await submit(client, project_id, "tester", "Check it")
    await asyncio.sleep(2.5)
    halted = await task_status(client, task_id)
    assert (halted["status"], halted["attempts"], halted["output"]) == ("pending", 1, None)
    assert (await task_status(client, extra))["status"] in ("pending", "queued")
    assert (await client.get(f"/api/v1/projects/{project_id}")).json()["status"] == "paused"

    resumed = await client.post(f"/api/v1/projects/{project_id}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "active"
    assert (await client.post(f"/api/v1/projects/{project_id}/resume")).status_code == 409
    done = await wait_for_task(client, task_id, "completed", timeout=30)
    assert done["attempts"] == 2
    await wait_for_task(client, extra, "completed", timeout=30)
    assert (await client.get(f"/api/v1/executions/{execution_id}")).json()["status"] in ("running", "completed")
    assert (await client.post(f"/api/v1/executions/{execution_id}/cancel")).status_code == 200


# -- a person's own requests -------------------------------------------------------------------


async def test_a_person_asks_holds_a_task_or_reviews_one(client: AsyncClient) -> None:
    project_id = await new_project(client)
    path = f"/api/v1/hitl/project/{project_id}/requests"
    question = await client.post(path, json={"question": "Should we support Safari 15?", "assigned_role": "architect"})
    assert question.status_code == 201, question.text
    asked = question.json()
    assert (asked["kind"], asked["options"], asked["assigned_role"]) == ("manual", ["approve", "reject"], "architect")
    assert (await respond(client, asked["request_id"], action="approve")).json()["status"] == "approved"

    # A review of a finished task: reject redoes it with the comment.
    done = await submit(client, project_id, "analyst", "Specify a wiki")
    await wait_for_task(client, done, "completed")
    review = (await client.post(path, json={"question": "Is the spec right?", "task_id": done})).json()
    assert review["options"] == ["approve", "reject", "amend"]
    assert review["artifact_ids"] == (await task_status(client, done))["output"]["artifact_ids"]
    answered = await respond(client, review["request_id"], action="reject", comment="add offline editing")
    assert answered.status_code == 200, answered.text
    redo_id = next(task_id for task_id in await task_ids(client, project_id) if task_id != done)
    redo = await wait_for_task(client, redo_id, "completed")
    assert (redo["redo_of"], redo["feedback"]) == (done, "add offline editing")

    # A hold on tasks that have not started (the project is stopped, so they wait): approve releases
    # one, reject cancels the other.
    assert (await client.post(f"/api/v1/projects/{project_id}/stop")).status_code == 200
    released, dropped = (
        await submit(client, project_id, "tester", "Test it"),
        await submit(client, project_id, "coder", "x"),
    )
    holds = [
        (await client.post(path, json={"question": "Wait for me", "task_id": t})).json() for t in (released, dropped)
    ]
    assert [(await task_status(client, t))["status"] for t in (released, dropped)] == ["waiting_for_hitl"] * 2
    assert (await client.post(f"/api/v1/projects/{project_id}/resume")).status_code == 200
    await asyncio.sleep(1)
    assert (await task_status(client, released))["status"] == "waiting_for_hitl"  # still held
    assert (await respond(client, holds[0]["request_id"], action="approve")).status_code == 200
    assert (await respond(client, holds[1]["request_id"], action="reject", comment="not now")).status_code == 200
    await wait_for_task(client, released, "completed")
    assert (await task_status(client, dropped))["status"] == "cancelled"

    # Bad requests: a task of nowhere, a running or finished-and-cancelled task, an artifact elsewhere.
    for body, status in (
        ({"question": "?", "task_id": str(uuid.uuid4())}, 422),
        ({"question": "?", "task_id": dropped}, 409),
        ({"question": "?", "artifact_ids": [str(uuid.uuid4())]}, 422),
        ({"question": ""}, 400),
    ):
        response = await client.post(path, json=body)
        assert response.status_code == status, (body, response.text)


# -- conflicts between agents --------------------------------------------------------------------


async def tasks_with_status(client: AsyncClient, project_id: str) -> list[dict[str, Any]]:
    return [await task_status(client, task_id) for task_id in await task_ids(client, project_id)]


@pytest.mark.parametrize("deadlock", [False, True], ids=["mediated", "put-to-a-person"])
async def test_a_conflict_is_mediated_then_put_to_a_person(client: AsyncClient, deadlock: bool) -> None:
    project_id = await new_project(client)
    analyst = await submit(client, project_id, "analyst", "Specify a photo archive")
    spec_ids = (await wait_for_task(client, analyst, "completed"))["output"]["artifact_ids"]
    directive = "[[offline:conflict=storage limits]]" + (" [[offline:deadlock]]" if deadlock else "")
    response = await client.post(
        f"/api/v1/projects/{project_id}/tasks",
        json={"agent_type": "architect", "instructions": f"Design it {directive}", "context_ids": spec_ids},
    )
    architect = response.json()["task_id"]
    if not deadlock:
        # The orchestrator settled it: the architect's result stands, no person was asked.
        done = await wait_for_task(client, architect, "completed", timeout=30)
        assert done["output"]["conflicts"][0]["topic"] == "storage limits"
        mediators = [t for t in await tasks_with_status(client, project_id) if t["mediates"] == architect]
        assert [(t["agent_type"], t["status"]) for t in mediators] == [("orchestrator", "completed")]
        assert await requests_of(client, project_id) == []
        return
    # Three rounds of mediation fail; then a person sees both positions.
    found = await eventually(
        lambda: requests_of(client, project_id, kind="conflict"), lambda items: len(items) == 1, timeout=30
    )
    mediators = [t for t in await tasks_with_status(client, project_id) if t["mediates"] == architect]
    assert [t["agent_type"] for t in mediators] == ["orchestrator"] * 3
    request = (await client.get(f"/api/v1/hitl/{found[0]['request_id']}")).json()
    assert "storage limits" in request["question"]
    assert "Position of the architect" in request["question"]
    assert "software_specification" in request["question"]
    assert spec_ids[0] in request["artifact_ids"]
    assert (await task_status(client, architect))["status"] == "waiting_for_hitl"
    answered = await respond(client, request["request_id"], action="approve", comment="the architect is right")
    assert answered.status_code == 200, answered.text
    await wait_for_task(client, architect, "completed")

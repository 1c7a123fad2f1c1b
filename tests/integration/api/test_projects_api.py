"""The projects API on both modes: happy paths, pagination, bad input, concurrency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

from httpx import AsyncClient

from app.tasks.models import TaskStatus


async def create_project(client: AsyncClient, **fields: object) -> dict[str, object]:
    response = await client.post("/api/v1/projects", json={"name": "Todo app", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_create_get_and_update_project(client: AsyncClient) -> None:
    created = await create_project(client, description="A todo list", oversight_level="high", budget_tokens=5000)
    assert created["status"] == "active"
    assert created["oversight_level"] == "high"
    assert created["budget_tokens"] == 5000
    uuid.UUID(str(created["id"]))

    fetched = (await client.get(f"/api/v1/projects/{created['id']}")).json()
    assert fetched == created

    response = await client.patch(f"/api/v1/projects/{created['id']}", json={"status": "paused", "name": "Todo v2"})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["status"], updated["name"], updated["description"]) == ("paused", "Todo v2", "A todo list")
    assert updated["updated_at"] >= created["updated_at"]
    again = (await client.get(f"/api/v1/projects/{created['id']}")).json()
    assert again["status"] == "paused"


async def test_list_projects_pages_with_cursor(client: AsyncClient) -> None:
    marker = uuid.uuid4().hex
    ids = [(await create_project(client, name=f"{marker}-{n}"))["id"] for n in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/v1/projects", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Other tests may share the database: ours appear once each, in creation order.
    ours = [project_id for project_id in seen if project_id in ids]
    assert ours == ids
    assert len(seen) == len(set(seen))


async def test_list_projects_filters_by_status(client: AsyncClient) -> None:
    project = await create_project(client)
    await client.patch(f"/api/v1/projects/{project['id']}", json={"status": "cancelled"})
    cancelled = (await client.get("/api/v1/projects", params={"status": "cancelled", "limit": 100})).json()
    assert project["id"] in [item["id"] for item in cancelled["items"]]
    assert all(item["status"] == "cancelled" for item in cancelled["items"])
    bad = await client.get("/api/v1/projects", params={"status": "sleeping"})
    assert bad.status_code == 400
    assert "status" in bad.text


async def test_project_status_lists_tasks(client: AsyncClient) -> None:
    project = await create_project(client)
    empty = (await client.get(f"/api/v1/projects/{project['id']}/status")).json()
    assert empty == {"project_id": project["id"], "tasks": []}
    submitted = (
        await client.post(
            f"/api/v1/projects/{project['id']}/tasks", json={"agent_type": "architect", "instructions": "design it"}
        )
    ).json()
    status = (await client.get(f"/api/v1/projects/{project['id']}/status")).json()
    assert [row["task_id"] for row in status["tasks"]] == [submitted["task_id"]]
    row = status["tasks"][0]
    assert row["agent_type"] == "architect"
    assert set(row) == {"task_id", "agent_type", "status", "created_at", "updated_at"}
    # Same values, same encoding as the task itself (on PostgreSQL the status skips the column
    # types' conversions: the driver's own values must read the same).
    task = (await client.get(f"/api/v1/tasks/{submitted['task_id']}")).json()
    assert row["created_at"] == task["created_at"]
    assert datetime.fromisoformat(row["updated_at"]).utcoffset() == timedelta(0)
    assert row["status"] in {status.value for status in TaskStatus}


async def test_unknown_ids_are_404(client: AsyncClient) -> None:
    missing = uuid.uuid4()
    for method, path in [
        ("GET", f"/api/v1/projects/{missing}"),
        ("PATCH", f"/api/v1/projects/{missing}"),
        ("GET", f"/api/v1/projects/{missing}/status"),
        ("POST", f"/api/v1/projects/{missing}/tasks"),
    ]:
        body = {"agent_type": "coder", "instructions": "x"} if path.endswith("tasks") else {}
        response = await client.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert str(missing) in response.json()["detail"]


async def test_bad_input_is_rejected_with_the_field_and_reason(client: AsyncClient) -> None:
    cases = [
        ({"name": ""}, "name"),
        ({"name": 42}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "ok", "oversight_level": "extreme"}, "oversight_level"),
        ({"name": "ok", "budget_tokens": -1}, "budget_tokens"),
        ({"name": "ok", "surprise": True}, "surprise"),
        ({}, "name"),
    ]
    for body, field in cases:
        response = await client.post("/api/v1/projects", json=body)
        assert response.status_code == 400, (body, response.text)
        assert field in response.text, (body, response.text)
        assert "Traceback" not in response.text
    not_json = await client.post("/api/v1/projects", content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    listing = await client.get("/api/v1/projects", params={"limit": 1000})
    assert listing.status_code == 400
    assert "limit" in listing.text
    bad_cursor = await client.get("/api/v1/projects", params={"cursor": "nope"})
    assert bad_cursor.status_code == 400


async def test_bad_patch_changes_nothing(client: AsyncClient) -> None:
    project = await create_project(client, description="keep me")
    response = await client.patch(f"/api/v1/projects/{project['id']}", json={"status": "exploded", "name": "new"})
    assert response.status_code == 400
    assert (await client.get(f"/api/v1/projects/{project['id']}")).json() == project


async def test_oversized_body_is_413(client: AsyncClient) -> None:
    response = await client.post("/api/v1/projects", json={"name": "big", "description": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413


async def test_concurrent_patches_apply_one_after_the_other(client: AsyncClient) -> None:
    """Many PATCHes of different fields at once: every one of them sticks, none is lost."""
    project = await create_project(client)
    path = f"/api/v1/projects/{project['id']}"
    bodies = [{"description": f"description {n}"} for n in range(5)] + [{"budget_tokens": 1000 + n} for n in range(5)]
    responses = await asyncio.gather(*(client.patch(path, json=body) for body in bodies))
    assert all(response.status_code == 200 for response in responses), [r.text for r in responses]
    final = (await client.get(path)).json()
    assert final["description"].startswith("description ")
    assert 1000 <= final["budget_tokens"] < 1005
    # The last writer of each field wins, and what we read is the state one of them left.
    last_description = [r.json()["description"] for r in responses[:5]]
    assert final["description"] in last_description

"""WebSocket streams against a real served app (uvicorn) with a real WebSocket client, both modes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import free_port
from tests.helpers import start_server


@pytest.fixture
def server_url(mode_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = start_server(mode_env, port, tmp_path / "api.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


async def receive_until_completed(ws: Any, task_id: str, timeout: float = 20) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            event = json.loads(await ws.recv())
            events.append(event)
            if event["data"].get("task_id") == task_id and event["data"].get("status") == "completed":
                return events


async def test_websocket_client_sees_its_task_events_in_order(server_url: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{server_url}") as http:
        project = (await http.post("/api/v1/projects", json={"name": "streams"})).json()
        other = (await http.post("/api/v1/projects", json={"name": "someone else"})).json()
        async with (
            websockets.connect(f"ws://{server_url}/ws/projects/{project['id']}") as project_ws,
            websockets.connect(f"ws://{server_url}/ws") as global_ws,
        ):
            # Work in another project must not reach this project's stream.
            other_task = (
                await http.post(f"/api/v1/projects/{other['id']}/tasks", json={"agent_type": "tester", "instructions": "t"})
            ).json()
            submitted = await http.post(
                f"/api/v1/projects/{project['id']}/tasks", json={"agent_type": "coder", "instructions": "build"}
            )
            assert submitted.status_code == 201
            task_id = submitted.json()["task_id"]

            events = await receive_until_completed(project_ws, task_id)
            assert {e["project_id"] for e in events} == {project["id"]}
            assert set(events[0]) == {"id", "event_type", "project_id", "data", "timestamp"}
            assert events[0]["event_type"] == "task_created"
            ids = [e["id"] for e in events]
            assert ids == sorted(ids) and len(ids) == len(set(ids))
            statuses = [e["data"]["status"] for e in events[1:]]
            assert statuses[0] == "queued" and statuses[-1] == "completed"
            assert statuses.index("working") < statuses.index("completed")

            everything = await receive_until_completed(global_ws, task_id)
            assert {e["project_id"] for e in everything} <= {project["id"], other["id"]}
            assert [e for e in everything if e["project_id"] == project["id"]] == events
            assert other_task["task_id"]


async def test_stream_of_unknown_project_is_closed_with_4404(server_url: str) -> None:
    missing = uuid.uuid4()
    async with websockets.connect(f"ws://{server_url}/ws/projects/{missing}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4404
    assert str(missing) in closed.value.rcvd.reason

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
from tests.helpers import Server, start_server


@pytest.fixture
def server(mode_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    served = start_server(mode_env, free_port(), tmp_path / "api.log")
    try:
        yield served
    finally:
        served.stop()


async def receive_until_completed(ws: Any, task_id: str, timeout: float = 20) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            event = json.loads(await ws.recv())
            if event.get("id") is None:
                continue  # live-only messages (the agent's output as it streams) and heartbeats
            events.append(event)
            if event["data"].get("task_id") == task_id and event["data"].get("status") == "completed":
                return events


async def test_websocket_client_sees_its_task_events_in_order(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers) as http:
        project = (await http.post("/api/v1/projects", json={"name": "streams"})).json()
        other = (await http.post("/api/v1/projects", json={"name": "someone else"})).json()
        async with (
            websockets.connect(server.ws_url(f"/ws/projects/{project['id']}")) as project_ws,
            websockets.connect(f"ws://127.0.0.1:{server.port}/ws", additional_headers=server.headers) as global_ws,
        ):
            # Work in another project must not reach this project's stream.
            other_task = (
                await http.post(
                    f"/api/v1/projects/{other['id']}/tasks", json={"agent_type": "tester", "instructions": "t"}
                )
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
            statuses = [e["data"]["status"] for e in events if e["event_type"] == "task_progress_updated"]
            assert statuses[0] == "queued" and statuses[-1] == "completed"
            assert statuses.index("working") < statuses.index("completed")
            kinds = [e["event_type"] for e in events]
            # The agent's work arrives before the completion that announces it.
            assert kinds.index("artifact_generated") < len(kinds) - 1
            assert events[-1]["data"]["status"] == "completed"

            everything = await receive_until_completed(global_ws, task_id)
            assert {e["project_id"] for e in everything} <= {project["id"], other["id"]}
            assert [e for e in everything if e["project_id"] == project["id"]] == events
            assert other_task["task_id"]


async def test_stream_of_unknown_project_is_closed_with_4404(server: Server) -> None:
    missing = uuid.uuid4()
    async with websockets.connect(server.ws_url(f"/ws/projects/{missing}")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4404
    assert str(missing) in closed.value.rcvd.reason

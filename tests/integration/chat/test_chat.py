"""The project chat on both modes: the orchestrator answers through its model, a new idea starts the
default workflow, agents' questions arrive in the chat, and messages can come over the WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import free_port
from tests.helpers import Server, cli_token, eventually, start_server, wait_for_task


@pytest.fixture
def server(mode_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    served = start_server(mode_env, free_port(), tmp_path / "api.log")
    try:
        yield served
    finally:
        served.stop()


async def conversation(http: httpx.AsyncClient, project_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await http.get(f"/api/v1/projects/{project_id}/messages")).json()["items"]
    return items


async def test_the_orchestrator_answers_and_a_new_idea_starts_the_workflow(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
        project_id = (await http.post("/api/v1/projects", json={"name": "chat", "oversight_level": "low"})).json()["id"]
        sent = await http.post(f"/api/v1/projects/{project_id}/messages", json={"message": "What is the plan so far?"})
        assert sent.status_code == 202, sent.text
        accepted = sent.json()
        await wait_for_task(http, accepted["task_id"], "completed")
        messages = await conversation(http, project_id)
        assert [(m["sender"], m["message_type"]) for m in messages] == [
            ("user", "message"),
            ("orchestrator", "response"),
        ]
        assert messages[0]["text"] == "What is the plan so far?"
        assert messages[1]["in_reply_to"] == accepted["message_id"] == messages[0]["id"]
        assert messages[1]["text"]  # the model's answer

        # Each model call takes a second, so that the workflow still runs when the idea comes again.
        idea = "A marketplace for used climbing gear [[offline:flags=start_workflow]] [[offline:delay=1]]"
        started = (await http.post(f"/api/v1/projects/{project_id}/messages", json={"message": idea})).json()
        await wait_for_task(http, started["task_id"], "completed")
        executions = (await http.get(f"/api/v1/projects/{project_id}/executions")).json()["items"]
        assert len(executions) == 1
        info = (await conversation(http, project_id))[-1]
        assert (info["message_type"], info["in_reply_to"]) == ("info", started["message_id"])
        assert executions[0]["id"] in info["text"]
        again = (await http.post(f"/api/v1/projects/{project_id}/messages", json={"message": idea})).json()
        await wait_for_task(http, again["task_id"], "completed")
        assert "already runs" in (await conversation(http, project_id))[-1]["text"]
        assert (await http.post(f"/api/v1/executions/{executions[0]['id']}/cancel")).status_code == 200
        assert len((await http.get(f"/api/v1/projects/{project_id}/executions")).json()["items"]) == 1

        for body in ({"message": ""}, {"text": "hi"}, {"message": "x" * 20_001}):
            assert (await http.post(f"/api/v1/projects/{project_id}/messages", json=body)).status_code == 400
        viewer = cli_token(server.env, role="viewer")
        refused = await http.post(
            f"/api/v1/projects/{project_id}/messages",
            json={"message": "hello"},
            headers={"Authorization": f"Bearer {viewer}"},
        )
        assert refused.status_code == 403


async def test_agents_questions_arrive_in_the_chat(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
        project_id = (await http.post("/api/v1/projects", json={"name": "questions"})).json()["id"]
        task = await http.post(
            f"/api/v1/projects/{project_id}/tasks",
            json={"agent_type": "architect", "instructions": "Design [[offline:question=Which region?]]"},
        )
        await wait_for_task(http, task.json()["task_id"], "waiting_for_hitl")
        [question] = await eventually(lambda: conversation(http, project_id), lambda items: len(items) == 1)
        assert (question["sender"], question["message_type"], question["text"]) == (
            "architect",
            "question",
            "Which region?",
        )
        assert question["requires_response"] is True


async def test_messages_over_the_websocket(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
        project_id = (await http.post("/api/v1/projects", json={"name": "socket chat"})).json()["id"]
    url = server.ws_url(f"/ws/projects/{project_id}") + "&event_types=agent_chat_message"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "message", "message": "Hello team"}))
        accepted = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert accepted["event_type"] == "message_accepted"
        async with asyncio.timeout(20):
            while (reply := json.loads(await ws.recv()))["event_type"] != "agent_chat_message":
                pass
        assert reply["data"]["message_type"] == "response"
        assert reply["data"]["in_reply_to"] == accepted["message_id"]
        await ws.send("not json")
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["event_type"] == "error"
    async with websockets.connect(server.ws_url("/ws")) as ws:
        await ws.send(json.dumps({"type": "message", "message": "to whom?"}))
        refused = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert refused["event_type"] == "error"
        assert "/ws/projects/" in refused["detail"]

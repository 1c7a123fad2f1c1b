"""Open streams and their token: a revocation cuts every WebSocket and SSE stream of the token on
every api process, and nothing sent afterwards is accepted; a token's messages on a socket share its
request budget; a token and a process have a cap on open sockets.

Real `botarmy serve` processes, real WebSocket and HTTP clients: two api processes sharing
PostgreSQL and Redis for the revocation, one embedded server for the limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import FAST_ENV, free_port
from tests.helpers import Server, clear_of_a_minute_boundary, cli_token, start_server, start_servers

CUT_BOUND_SECONDS = 2.0  # the requirement is a second; a margin for a loaded CI machine


async def open_socket(url: str) -> ClientConnection:
    """A stream, once the server attached it (a heartbeat-free stream sends nothing first)."""
    ws = await websockets.connect(url)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.3)  # the replay of after=0, if any
    return ws


async def closed_at(ws: ClientConnection) -> float:
    """When the server closed `ws` (the loop's clock), reading whatever came before."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
    return time.monotonic()


async def sse_cut_at(http: httpx.AsyncClient, path: str, headers: dict[str, str], ready: asyncio.Event) -> list[str]:
    """Read an SSE stream until the server ends it; the lines it sent after `ready` is set."""
    lines: list[str] = []
    async with http.stream("GET", path, headers=headers, timeout=15) as response:
        assert response.status_code == 200
        ready.set()
        async for line in response.aiter_lines():
            lines.append(line)
    lines.append(f"ended {time.monotonic()}")
    return lines


@contextlib.contextmanager
def two_servers(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    first, second = start_servers(env, [(free_port(), tmp_path / "api-1.log"), (free_port(), tmp_path / "api-2.log")])
    try:
        yield first, second
    finally:
        second.stop()
        first.stop()


async def test_a_revocation_cuts_every_stream_of_the_token_on_every_api_process(
    own_services_env: dict[str, str], tmp_path: Path
) -> None:
    with two_servers(own_services_env, tmp_path) as (one, two):
        async with httpx.AsyncClient(base_url=one.url, headers=one.headers, timeout=20) as admin:
            project_id = (await admin.post("/api/v1/projects", json={"name": "revoked"})).json()["id"]
            created = (await admin.post("/api/v1/tokens", json={"name": "owner", "role": "product_owner"})).json()
            other = (await admin.post("/api/v1/tokens", json={"name": "bystander", "role": "viewer"})).json()
            token, token_id = created["token"], created["id"]
            stream = f"/ws/projects/{project_id}"
            sockets = [
                await open_socket(one.ws_url(stream, token) + "&after=0"),
                await open_socket(two.ws_url(stream, token) + "&after=0"),
                await open_socket(two.ws_url("/ws", token)),
            ]
            bystander = await open_socket(two.ws_url(stream, other["token"]))
            # The socket works before: a message is accepted.
            await sockets[0].send(json.dumps({"type": "message", "message": "before"}))
            async with asyncio.timeout(10):
                while (answer := json.loads(await sockets[0].recv()))["event_type"] not in (
                    "message_accepted",
                    "error",
                ):
                    pass
            assert answer["event_type"] == "message_accepted", answer
            ready = asyncio.Event()
            async with httpx.AsyncClient(base_url=two.url, timeout=20) as sse_client:
                sse = asyncio.create_task(
                    sse_cut_at(
                        sse_client,
                        f"/api/v1/projects/{project_id}/events/stream",
                        {"Authorization": f"Bearer {token}"},
                        ready,
                    )
                )
                await asyncio.wait_for(ready.wait(), 10)
                await asyncio.sleep(0.3)  # attached
                closing = [asyncio.create_task(closed_at(ws)) for ws in sockets]
                revoked_at = time.monotonic()
                assert (await admin.delete(f"/api/v1/tokens/{token_id}")).status_code == 200
                # Sent after the revocation answered: never accepted, whatever reached the socket first.
                with contextlib.suppress(websockets.ConnectionClosed):
                    await sockets[1].send(json.dumps({"type": "message", "message": "after"}))
                cut = await asyncio.gather(*closing)
                sse_lines = await asyncio.wait_for(sse, 10)
            assert [ws.close_code for ws in sockets] == [4401, 4401, 4401]
            assert {ws.close_reason for ws in sockets} == {"The token was revoked."}
            assert max(cut) - revoked_at < CUT_BOUND_SECONDS, [round(at - revoked_at, 3) for at in cut]
            assert "event: error" in sse_lines, sse_lines
            assert any("The token was revoked." in line and "4401" in line for line in sse_lines), sse_lines
            sse_cut = float(sse_lines[-1].split()[1])
            assert sse_cut - revoked_at < CUT_BOUND_SECONDS, sse_cut - revoked_at
            # The other token's stream goes on; the revoked one cannot come back.
            assert bystander.close_code is None
            await bystander.close()
            again = await websockets.connect(one.ws_url(stream, token))
            await closed_at(again)
            assert again.close_code == 4401
            messages = (await admin.get(f"/api/v1/projects/{project_id}/messages")).json()["items"]
            texts = [item["text"] for item in messages if item["sender"] == "user"]
            assert texts == ["before"], messages
            audit = (await admin.get("/api/v1/audit/events", params={"actor": "owner", "limit": 100})).json()["items"]
            chats = [event for event in audit if event["event_type"] == "user_chat_message"]
            assert len(chats) == 1, chats


# -- the limits of one server ------------------------------------------------------------------

RATE = 10
PER_TOKEN = 3
PER_PROCESS = 5


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("limited")
    env = {
        **FAST_ENV,
        "BOTARMY_DATA_DIR": str(data / "data"),
        "BOTARMY_RATE_LIMIT_PER_MINUTE": str(RATE),
        "BOTARMY_WS_MAX_CONNECTIONS_PER_TOKEN": str(PER_TOKEN),
        "BOTARMY_WS_MAX_CONNECTIONS": str(PER_PROCESS),
    }
    server = start_server(env, free_port(), data / "api.log")
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def admin_of(server: Server) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An admin client and a new project; admin tokens of their own, so as not to use up one budget."""
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as admin:
        project_id = (await admin.post("/api/v1/projects", json={"name": "limits"})).json()["id"]
        yield admin, project_id


async def new_token(admin: httpx.AsyncClient, name: str, role: str) -> str:
    created = await admin.post("/api/v1/tokens", json={"name": name, "role": role})
    assert created.status_code == 201, created.text
    token: str = created.json()["token"]
    return token


async def test_a_chat_flood_on_one_socket_is_cut_with_4429(limited: Server) -> None:
    async with admin_of(limited) as (admin, project_id):
        token = await new_token(admin, "flooder", "product_owner")
    await clear_of_a_minute_boundary()  # the budget is per minute: all of the flood in one
    ws = await open_socket(limited.ws_url(f"/ws/projects/{project_id}", token))  # the handshake: 1 of RATE
    answers: list[dict[str, Any]] = []
    with contextlib.suppress(websockets.ConnectionClosed):
        for n in range(30):
            await ws.send(json.dumps({"type": "message", "message": f"flood {n}"}))
        async with asyncio.timeout(20):
            async for raw in ws:
                answers.append(json.loads(raw))
    accepted = [a for a in answers if a.get("event_type") == "message_accepted"]
    assert len(accepted) == RATE - 1, answers
    assert ws.close_code == 4429
    assert "a minute" in (ws.close_reason or "")
    # The handshake counts against the same budget: the next socket of the token is refused.
    again = await websockets.connect(limited.ws_url(f"/ws/projects/{project_id}", token))
    await closed_at(again)
    assert again.close_code == 4429
    async with httpx.AsyncClient(base_url=limited.url, timeout=20) as http:
        refused = await http.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 429


async def test_open_sockets_are_capped_per_token_and_per_process(limited: Server) -> None:
    async with admin_of(limited) as (admin, project_id):
        first = await new_token(admin, "first-viewer", "viewer")
        second = await new_token(admin, "second-viewer", "viewer")
    stream = f"/ws/projects/{project_id}"
    mine = [await open_socket(limited.ws_url(stream, first)) for _ in range(PER_TOKEN)]
    assert all(ws.close_code is None for ws in mine)
    over = await websockets.connect(limited.ws_url(stream, first))
    await closed_at(over)
    assert (over.close_code, over.close_reason) == (4429, f"this token has {PER_TOKEN} streams open, its limit")
    theirs = [await open_socket(limited.ws_url("/ws", second)) for _ in range(PER_PROCESS - PER_TOKEN)]
    assert all(ws.close_code is None for ws in theirs)
    full = await websockets.connect(limited.ws_url(stream, second))
    await closed_at(full)
    assert full.close_code == 1013
    assert "try again later" in (full.close_reason or "")
    # A socket closed frees its place at once.
    await mine[0].close()
    await asyncio.sleep(0.3)
    replacement = await open_socket(limited.ws_url(stream, second))
    assert replacement.close_code is None
    for ws in (*mine[1:], *theirs, replacement):
        await ws.close()


async def test_sse_streams_share_the_sockets_caps(limited: Server) -> None:
    async with admin_of(limited) as (admin, project_id):
        first = await new_token(admin, "sse-first", "viewer")
        second = await new_token(admin, "sse-second", "viewer")
    path = f"/api/v1/projects/{project_id}/events/stream"
    await asyncio.sleep(0.3)  # the sockets of the tests before are gone
    async with httpx.AsyncClient(base_url=limited.url, timeout=20) as http, contextlib.AsyncExitStack() as open_streams:

        async def sse(token: str) -> httpx.Response:
            response = await open_streams.enter_async_context(
                http.stream("GET", path, headers={"Authorization": f"Bearer {token}"})
            )
            await asyncio.sleep(0.2)  # the stream takes its place once its body starts
            return response

        mine = [await sse(first) for _ in range(PER_TOKEN)]
        assert [response.status_code for response in mine] == [200] * PER_TOKEN
        over = await sse(first)
        assert over.status_code == 429
        assert json.loads(await over.aread())["detail"] == f"this token has {PER_TOKEN} streams open, its limit"
        # Counted with the token's sockets: its next socket is refused too.
        socket = await websockets.connect(limited.ws_url(f"/ws/projects/{project_id}", first))
        await closed_at(socket)
        assert socket.close_code == 4429
        theirs = [await sse(second) for _ in range(PER_PROCESS - PER_TOKEN)]
        assert [response.status_code for response in theirs] == [200] * (PER_PROCESS - PER_TOKEN)
        full = await sse(second)
        assert full.status_code == 503
        assert "try again later" in json.loads(await full.aread())["detail"]
        # A stream closed frees its place.
        await mine[0].aclose()
        await asyncio.sleep(0.3)
        replacement = await sse(second)
        assert replacement.status_code == 200


async def test_an_expired_token_is_refused_and_its_streams_are_closed_at_its_expiry(limited: Server) -> None:
    admin_token = await asyncio.to_thread(cli_token, limited.env)  # a budget of its own
    async with httpx.AsyncClient(
        base_url=limited.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=20
    ) as admin:
        project_id = (await admin.post("/api/v1/projects", json={"name": "expiring"})).json()["id"]
        created = await admin.post(
            "/api/v1/tokens", json={"name": "short-lived", "role": "product_owner", "expires_in_seconds": 3}
        )
    assert created.status_code == 201, created.text
    token, expires_at = created.json()["token"], datetime.fromisoformat(created.json()["expires_at"]).timestamp()
    headers = {"Authorization": f"Bearer {token}"}
    socket = await open_socket(limited.ws_url(f"/ws/projects/{project_id}", token))
    async with httpx.AsyncClient(base_url=limited.url, timeout=20) as http:
        assert (await http.get("/api/v1/projects", headers=headers)).status_code == 200
        ready = asyncio.Event()
        path = f"/api/v1/projects/{project_id}/events/stream"
        sse = asyncio.create_task(sse_cut_at(http, path, headers, ready))
        await ready.wait()
        await closed_at(socket)
        closed = time.time()
        assert (socket.close_code, socket.close_reason) == (4401, "The token expired.")
        assert expires_at <= closed < expires_at + CUT_BOUND_SECONDS, closed - expires_at
        lines = await sse
        assert any("The token expired." in line for line in lines), lines
        assert time.time() < expires_at + CUT_BOUND_SECONDS
        refused = await http.get("/api/v1/projects", headers=headers)
        assert refused.status_code == 401
        assert "expired" in refused.json()["detail"]

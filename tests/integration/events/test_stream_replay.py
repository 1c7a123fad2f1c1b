"""Replay then live: `?after=` across a burst, `?last=`, filters, SSE with Last-Event-ID, the audit log,
and a slow subscriber cut off instead of slowing the rest. Real served apps, real clients, both modes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response as WsResponse
from websockets.uri import parse_uri

from app.core.channels import GLOBAL_CHANNEL
from app.events.hub import LiveHub
from app.events.streams import Feed, FeedItem, FeedOverflowError, Filters
from tests.conftest import free_port
from tests.helpers import (
    Server,
    eventually,
    migrated_database,
    start_server,
    start_servers,
    start_worker,
    wait_for_task,
)


@pytest.fixture
def server(mode_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    served = start_server({**mode_env, "BOTARMY_RATE_LIMIT_PER_MINUTE": "100000"}, free_port(), tmp_path / "api.log")
    try:
        yield served
    finally:
        served.stop()


STALL_EVENTS = 250  # events of 20 kB: more than the stalled client's socket buffers hold (~3 MB on loopback)


async def all_event_ids(http: httpx.AsyncClient, project_id: str) -> list[int]:
    ids: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"/api/v1/projects/{project_id}/events", params=params)).json()
        ids += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


async def burst(http: httpx.AsyncClient, project_id: str, count: int, clients: int = 8) -> None:
    """`count` project updates from several clients at once: as many `project_updated` events."""
    numbers = iter(range(count))

    async def one_client() -> None:
        for n in numbers:
            response = await http.patch(f"/api/v1/projects/{project_id}", json={"description": f"burst {n}"})
            assert response.status_code == 200, response.text

    await asyncio.gather(*(one_client() for _ in range(clients)))


async def questions(http: httpx.AsyncClient, project_id: str, count: int, clients: int = 8) -> None:
    """`count` questions of 20 kB each from several clients at once: as many `hitl_request_created` events."""
    numbers = iter(range(count))

    async def one_client() -> None:
        for n in numbers:
            question = f"question {n} " + "x" * 19_980
            response = await http.post(f"/api/v1/hitl/project/{project_id}/requests", json={"question": question})
            assert response.status_code == 201, response.text

    await asyncio.gather(*(one_client() for _ in range(clients)))


async def receive_ids(ws: Any, until: int, timeout: float = 30) -> list[int]:
    received: list[int] = []
    async with asyncio.timeout(timeout):
        while not received or max(received) < until:
            message = json.loads(await ws.recv())
            if message.get("id") is not None:  # not a heartbeat or live model output
                received.append(message["id"])
    return received


async def test_resume_with_after_across_a_burst_misses_nothing_and_doubles_nothing(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
        project_id = (await http.post("/api/v1/projects", json={"name": "burst"})).json()["id"]
        await burst(http, project_id, 40)
        resume_from = (await all_event_ids(http, project_id))[20]
        # The client reconnects while the next burst is being written: replay and live overlap.
        writing = asyncio.create_task(burst(http, project_id, 200))
        await asyncio.sleep(0.3)
        async with websockets.connect(server.ws_url(f"/ws/projects/{project_id}") + f"&after={resume_from}") as ws:
            await writing
            expected = [event_id for event_id in await all_event_ids(http, project_id) if event_id > resume_from]
            received = await receive_ids(ws, max(expected))
            with contextlib.suppress(TimeoutError):  # nothing more may come: no duplicate after the end
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 1.5))["id"])
        assert len(received) == len(set(received)), "an event arrived twice"
        assert sorted(received) == expected, "an event is missing"
        assert len(expected) >= 219


async def test_last_n_and_filters(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
        project_id = (await http.post("/api/v1/projects", json={"name": "filters"})).json()["id"]
        await burst(http, project_id, 10, clients=1)
        ids = await all_event_ids(http, project_id)
        async with websockets.connect(server.ws_url(f"/ws/projects/{project_id}") + "&last=3") as ws:
            assert [json.loads(await ws.recv())["id"] for _ in range(3)] == ids[-3:]

        url = server.ws_url(f"/ws/projects/{project_id}") + "&event_types=task_progress_updated&agent_types=coder"
        async with websockets.connect(url) as ws:
            for agent in ("tester", "coder"):
                await http.post(f"/api/v1/projects/{project_id}/tasks", json={"agent_type": agent, "instructions": "x"})
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(20):
                while not seen or seen[-1]["data"]["status"] != "completed":
                    message = json.loads(await ws.recv())
                    if message["event_type"] != "heartbeat":
                        seen.append(message)
        assert {m["event_type"] for m in seen} == {"task_progress_updated"}
        assert {m["data"]["agent_type"] for m in seen} == {"coder"}

        for bad in ("&after=x", "&last=0", "&agent_types=poet", "&event_types=Not-A-Name"):
            async with websockets.connect(server.ws_url(f"/ws/projects/{project_id}") + bad) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400, bad


async def test_server_sent_events_resume_from_last_event_id(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
        project_id = (await http.post("/api/v1/projects", json={"name": "sse"})).json()["id"]
        await burst(http, project_id, 6, clients=1)
        ids = await all_event_ids(http, project_id)
        received: list[tuple[str, str]] = []
        headers = {"Last-Event-ID": str(ids[2])}
        async with http.stream("GET", f"/api/v1/projects/{project_id}/events/stream", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async with asyncio.timeout(20):
                async for line in response.aiter_lines():
                    if line.startswith("id:"):
                        received.append(("id", line.split(":", 1)[1].strip()))
                    elif line.startswith("event:"):
                        received.append(("event", line.split(":", 1)[1].strip()))
                    if len([kind for kind, _ in received if kind == "id"]) == len(ids) - 3:
                        break
        assert [int(value) for kind, value in received if kind == "id"] == ids[3:]
        assert {value for kind, value in received if kind == "event"} == {"project_updated"}
        missing = await http.get("/api/v1/projects/00000000-0000-0000-0000-000000000000/events/stream")
        assert missing.status_code == 404


async def test_the_audit_log_filters_and_pages(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
        project_id = (await http.post("/api/v1/projects", json={"name": "audit"})).json()["id"]
        await burst(http, project_id, 5, clients=1)
        listed = await http.get("/api/v1/audit/events", params={"project_id": project_id, "limit": 2})
        assert listed.status_code == 200, listed.text
        page = listed.json()
        assert [item["event_type"] for item in page["items"]] == ["project_created", "project_updated"]
        assert page["next_cursor"] is not None
        updates = (
            await http.get("/api/v1/audit/events", params={"project_id": project_id, "event_type": "project_updated"})
        ).json()["items"]
        assert len(updates) == 5
        assert all(item["actor"] for item in updates)
        one = (await http.get(f"/api/v1/audit/events/{updates[0]['id']}")).json()
        assert one == updates[0]
        assert (await http.get("/api/v1/audit/events/999999999")).status_code == 404
        assert (await http.get("/api/v1/audit/events", params={"event_type": "Bad Name"})).status_code == 400
        # Append-only: no method changes an event.
        for method in ("PUT", "PATCH", "DELETE"):
            assert (await http.request(method, f"/api/v1/audit/events/{updates[0]['id']}")).status_code == 405


async def test_a_subscriber_that_falls_behind_is_cut_off_not_waited_for(embedded_env: dict[str, str]) -> None:
    """The feed's bounded buffer, with real (in-memory) channels: overflow ends that feed only."""
    database = await migrated_database(embedded_env)
    channels = ChannelsPlugin(backend=MemoryChannelsBackend(), arbitrary_channels_allowed=True)
    try:
        async with channels, contextlib.AsyncExitStack() as stack:
            hub = LiveHub(channels, database.get_session)
            slow = Feed(database.get_session, None, Filters(), max_backlog=5, heartbeat_seconds=10)
            fast = Feed(database.get_session, None, Filters(), max_backlog=100, heartbeat_seconds=10)
            slow_items = await stack.enter_async_context(slow.open(hub, None))
            fast_items = await stack.enter_async_context(fast.open(hub, None))
            for n in range(1, 21):
                channels.publish(json.dumps({"id": n, "event_type": "x", "data": {}}).encode(), [GLOBAL_CHANNEL])
            got: list[int] = []
            async with asyncio.timeout(10):
                async for item in fast_items:
                    if isinstance(item, FeedItem) and item.id is not None:
                        got.append(item.id)
                    if len(got) == 20:
                        break
            assert got == list(range(1, 21))
            assert slow.sink.cut_off.is_set()
            with pytest.raises(FeedOverflowError):
                await asyncio.wait_for(drain(slow_items), 10)
    finally:
        await database.get_engine().dispose()


class StalledClient(asyncio.Protocol):
    """A WebSocket client that completes its handshake, then stops reading its socket."""

    def __init__(self, url: str) -> None:
        self.ws = ClientProtocol(parse_uri(url))
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.event_ids: list[int] = []
        self.close_code: int | None = None
        self.close_reason = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, WsResponse) and not self.opened.done():
                assert self.transport is not None
                self.transport.pause_reading()  # from now on the server's frames pile up
                self.opened.set_result(None)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                message = json.loads(bytes(event.data))
                if message.get("id") is not None:
                    self.event_ids.append(message["id"])
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                close = Close.parse(bytes(event.data))
                self.close_code, self.close_reason = int(close.code), close.reason
        self._flush()

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            for data in self.ws.data_to_send():
                if data:
                    self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def resume(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()


async def test_a_stalled_websocket_client_is_cut_off_while_others_get_everything(
    mode_env: dict[str, str], tmp_path: Path
) -> None:
    """A client that stops reading: its sends block; it is cut off (4429) and the others keep up."""
    env = {**mode_env, "BOTARMY_RATE_LIMIT_PER_MINUTE": "100000", "BOTARMY_STREAM_MAX_BACKLOG": "10"}
    server = start_server(env, free_port(), tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
            project_id = (await http.post("/api/v1/projects", json={"name": "stalled"})).json()["id"]
            url = server.ws_url(f"/ws/projects/{project_id}")
            # A small receive buffer, so that the server's writes back up after a few kilobytes.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
            _, stalled = await asyncio.get_running_loop().create_connection(lambda: StalledClient(url), sock=sock)
            await asyncio.wait_for(stalled.opened, 10)
            async with websockets.connect(url, max_size=None) as fast:
                received: list[int] = []

                async def read_fast() -> None:  # reads all along, as a client that keeps up does
                    async for raw in fast:
                        message = json.loads(raw)
                        if message.get("id") is not None:
                            received.append(message["id"])

                reader = asyncio.create_task(read_fast())
                await questions(http, project_id, STALL_EVENTS)
                expected = (await all_event_ids(http, project_id))[-STALL_EVENTS:]

                async def fast_received() -> set[int]:
                    assert not reader.done(), reader  # the fast client was never cut off
                    return set(received)

                await eventually(fast_received, lambda got: set(expected) <= got, timeout=30)
                reader.cancel()
                assert len(received) == len(set(received))
            stalled.resume()
            try:
                await asyncio.wait_for(stalled.closed, 30)
            except TimeoutError:
                raise AssertionError(f"{len(stalled.event_ids)} {stalled.close_code} {stalled.close_reason}") from None
        assert len(stalled.event_ids) < STALL_EVENTS, "the stalled client was never cut off"
        assert len(set(stalled.event_ids)) == len(stalled.event_ids)
        if stalled.close_code is not None:  # it read on in time to receive the close frame
            assert stalled.close_code == 4429, stalled.close_reason
            # The resume point loses nothing: the client has every event up to it (live events come in
            # commit order, so it is not always the last id the client saw).
            match = re.search(r"\?after=(\d+)$", stalled.close_reason)
            assert match, stalled.close_reason
            resume = int(match.group(1))
            assert {i for i in expected if i <= resume} <= set(stalled.event_ids)
            assert resume >= min(stalled.event_ids)
    finally:
        server.stop()


async def drain(items: Any) -> None:
    async for _ in items:
        pass


async def test_model_output_streams_live_and_is_not_stored(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
        project_id = (await http.post("/api/v1/projects", json={"name": "live output"})).json()["id"]
        url = server.ws_url(f"/ws/projects/{project_id}") + "&event_types=agent_output_delta,task_progress_updated"
        async with websockets.connect(url) as ws:
            task_id = (
                await http.post(
                    f"/api/v1/projects/{project_id}/tasks", json={"agent_type": "analyst", "instructions": "Spec a CRM"}
                )
            ).json()["task_id"]
            deltas: list[dict[str, Any]] = []
            async with asyncio.timeout(20):
                while True:
                    message = json.loads(await ws.recv())
                    if message["event_type"] == "agent_output_delta":
                        deltas.append(message)
                    elif message["event_type"] == "task_progress_updated" and message["data"]["status"] == "completed":
                        break
        task = (await http.get(f"/api/v1/tasks/{task_id}")).json()
        assert deltas, "no live output arrived"
        assert {d["id"] for d in deltas} == {None}
        assert [d["data"]["sequence"] for d in deltas] == list(range(1, len(deltas) + 1))
        assert {(d["data"]["task_id"], d["data"]["agent_type"], d["data"]["attempt"]) for d in deltas} == {
            (task_id, "analyst", 1)
        }
        written = json.loads("".join(d["data"]["text"] for d in deltas))  # the whole answer, as it was written
        assert written["summary"] == task["output"]["summary"]
        # Live only: not in the log, and not replayed.
        stored = await all_event_ids(http, project_id)
        log = (await http.get("/api/v1/audit/events", params={"project_id": project_id, "limit": 100})).json()
        assert "agent_output_delta" not in {item["event_type"] for item in log["items"]}
        async with websockets.connect(server.ws_url(f"/ws/projects/{project_id}") + "&after=0") as ws:
            replayed = await receive_ids(ws, max(stored))
        assert sorted(replayed) == stored


async def test_two_api_processes_each_client_sees_every_event_once(
    own_services_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**own_services_env, "BOTARMY_RATE_LIMIT_PER_MINUTE": "100000"}
    first, second = start_servers(env, [(free_port(), tmp_path / "api-1.log"), (free_port(), tmp_path / "api-2.log")])
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        async with (
            httpx.AsyncClient(base_url=first.url, headers=first.headers, timeout=20) as one,
            httpx.AsyncClient(base_url=second.url, headers=first.headers, timeout=20) as two,
        ):
            project_id = (await one.post("/api/v1/projects", json={"name": "two instances"})).json()["id"]
            async with (
                websockets.connect(first.ws_url(f"/ws/projects/{project_id}")) as on_first,
                websockets.connect(second.ws_url(f"/ws/projects/{project_id}", first.token)) as on_second,
            ):
                # Events written by each api process, and by the worker.
                await asyncio.gather(burst(one, project_id, 30, clients=3), burst(two, project_id, 30, clients=3))
                task = await two.post(
                    f"/api/v1/projects/{project_id}/tasks", json={"agent_type": "tester", "instructions": "x"}
                )
                task_id = task.json()["task_id"]
                await wait_for_task(one, task_id, "completed")
                expected = await all_event_ids(one, project_id)
                created = expected[0]  # project_created came before the sockets connected
                wanted = [i for i in expected if i != created]
                seen_first = await receive_ids(on_first, max(wanted))
                seen_second = await receive_ids(on_second, max(wanted))
        for seen in (seen_first, seen_second):
            assert len(seen) == len(set(seen)), "an event arrived twice"
            assert sorted(seen) == wanted, "an event is missing"
        assert len(wanted) > 60
    finally:
        for process in (first, second, worker):
            process.stop()

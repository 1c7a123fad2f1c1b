"""Events in one order, resumable without loss or duplicate, while many writers commit at once, and
the WebSocket protocol around it: a close during a burst, and 1001 when the api shuts down.

Real processes on PostgreSQL + Redis: a served api, its HTTP writers, and writers in this process
that commit events straight to the database and publish them through Redis, as a worker does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import websockets
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from sqlalchemy import select

from app.config import load_settings
from app.core.channels import GLOBAL_CHANNEL, BackendPublisher, build_channels_backend, event_channels
from app.db.engine import build_db_config
from app.events.hub import LiveHub
from app.events.models import Event
from app.events.outbox import encode_event
from app.events.services import EventService
from app.events.streams import Feed, FeedItem, Filters
from tests.conftest import free_port
from tests.helpers import (
    NO_PROBLEMS,
    Server,
    Tally,
    eventually,
    follow,
    migrated_database,
    start_server,
    start_servers,
    table_ids,
)

CHURN_SECONDS = 4.0


@contextlib.asynccontextmanager
async def direct_writers(env: dict[str, str], project_id: str, writers: int) -> AsyncIterator[list[int]]:
    """`writers` tasks committing `project_updated` events in a loop, publishing through Redis."""
    settings = load_settings(env)
    publisher = BackendPublisher(build_channels_backend(settings.redis))
    config = build_db_config(settings.db, publisher)
    await publisher.start()
    stop = asyncio.Event()
    committed = [0]

    async def write() -> None:
        while not stop.is_set():
            async with config.get_session() as session:
                for _ in range(2):
                    await EventService(session=session).record(
                        "project_updated",
                        project_id=uuid.UUID(project_id),
                        data={"project_id": project_id, "changes": ["description"], "status": "active"},
                    )
                await session.commit()
            committed[0] += 1

    tasks = [asyncio.create_task(write()) for _ in range(writers)]
    try:
        yield committed
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await publisher.stop()
        await config.get_engine().dispose()


async def http_writers(server: Server, project_id: str, stop: asyncio.Event, clients: int) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:

        async def one() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                response = await http.patch(f"/api/v1/projects/{project_id}", json={"description": f"churn {n}"})
                assert response.status_code == 200, response.text

        await asyncio.gather(*(one() for _ in range(clients)))


async def churn_client(url: str, tally: Tally, stop: asyncio.Event, every: int) -> None:
    """Drops its connection every `every` messages and reconnects with after=<highest id seen>.

    It closes while the burst goes on, reading on until the server's close frame comes (as a client
    does that does not stop reading), and counts what came meanwhile.
    """
    while not stop.is_set():
        after = max(tally.ids, default=0)
        async with websockets.connect(f"{url}&after={after}", max_size=None) as ws:
            for _ in range(every):
                try:
                    tally.add(await asyncio.wait_for(ws.recv(), 2))
                except TimeoutError:
                    break

            async def read_on(ws: Any = ws) -> None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for message in ws:
                        tally.add(message)

            reader = asyncio.create_task(read_on())
            began = time.monotonic()
            await ws.close()
            tally.slowest_close = max(tally.slowest_close, time.monotonic() - began)
            await reader
        tally.reconnections += 1


async def read_all(url: str, tally: Tally, stop: asyncio.Event) -> None:
    async with websockets.connect(url, max_size=None) as ws:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                tally.add(await asyncio.wait_for(ws.recv(), 0.5))


async def read_until(url: str, tally: Tally, last: int, after: int) -> None:
    """Reconnect once more and read up to `last`: whatever the churn had not received yet."""
    async with websockets.connect(f"{url}&after={after}", max_size=None) as ws:
        async with asyncio.timeout(20):
            while max(tally.ids, default=0) < last:
                tally.add(await ws.recv())


async def test_resuming_clients_get_every_event_once_in_order_under_concurrent_writers(
    own_services_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**own_services_env, "BOTARMY_RATE_LIMIT_PER_MINUTE": "1000000"}
    server = start_server(env, free_port(), tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
            project_id = (await http.post("/api/v1/projects", json={"name": "order"})).json()["id"]
        project_url = server.ws_url(f"/ws/projects/{project_id}")
        global_url = server.ws_url("/ws")
        churned, everything, steady = Tally(), Tally(), Tally()
        stop_writing, stop_reading = asyncio.Event(), asyncio.Event()
        readers = [
            asyncio.create_task(churn_client(project_url, churned, stop_writing, every=5)),
            asyncio.create_task(read_all(global_url, everything, stop_reading)),
            asyncio.create_task(read_all(project_url, steady, stop_reading)),
        ]
        await asyncio.sleep(0.3)
        async with direct_writers(env, project_id, writers=6) as committed:
            http_load = asyncio.create_task(http_writers(server, project_id, stop_writing, clients=4))
            await asyncio.sleep(CHURN_SECONDS)
            stop_writing.set()
            await http_load
        await readers[0]
        expected = await table_ids(env, project_id)
        everything_expected = [i for i in await table_ids(env) if i > min(everything.ids, default=0) - 1]
        await read_until(project_url, churned, expected[-1], max(churned.ids, default=0))

        async def caught_up() -> bool:
            return min(max(steady.ids, default=0), max(everything.ids, default=0)) >= expected[-1]

        await eventually(caught_up, bool, timeout=20)
        stop_reading.set()
        await asyncio.gather(*readers[1:])
    finally:
        server.stop()
    assert committed[0] > 50 and churned.reconnections >= 5, (committed[0], churned.reconnections)
    assert churned.problems(expected) == {"missing": [], "doubled": [], "backwards": []}
    assert steady.problems([i for i in expected if i >= steady.ids[0]]) == {
        "missing": [],
        "doubled": [],
        "backwards": [],
    }
    assert everything.problems(everything_expected) == {"missing": [], "doubled": [], "backwards": []}
    # The server answered every close at once, in the middle of the burst.
    assert churned.slowest_close < 3.0, churned.slowest_close


async def test_the_api_closes_its_streams_with_1001_on_sigterm_and_exits(
    own_services_env: dict[str, str], tmp_path: Path
) -> None:
    """Within its grace, although an upload stalls in flight (uvicorn waits for those without one)."""
    server = start_server({**own_services_env, "BOTARMY_API_GRACE_SECONDS": "2"}, free_port(), tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
            project_id = (await http.post("/api/v1/projects", json={"name": "going away"})).json()["id"]
        sockets = [
            await websockets.connect(server.ws_url(f"/ws/projects/{project_id}") + "&after=0"),
            await websockets.connect(server.ws_url("/ws")),
        ]
        for ws in sockets:  # the replay (project_created) or a heartbeat-free idle stream: both attached
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.recv(), 1)
        _, stalled = await asyncio.open_connection("127.0.0.1", server.port)
        stalled.write(
            f"POST /api/v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
        )
        await stalled.drain()
        await asyncio.sleep(0.3)
        began = time.monotonic()
        os.killpg(server.popen.pid, signal.SIGTERM)
        codes = []
        for ws in sockets:
            with contextlib.suppress(websockets.ConnectionClosed):
                async with asyncio.timeout(10):
                    async for _ in ws:
                        pass
            codes.append(ws.close_code)
        exit_code = await asyncio.to_thread(server.popen.wait, 15)
        took = time.monotonic() - began
        stalled.close()
    finally:
        server.stop()
    assert codes == [1001, 1001], server.log()
    assert exit_code in (0, -signal.SIGTERM), server.log()  # uvicorn ends by the signal it caught
    assert took < 8, took


async def test_clients_of_a_killed_api_resume_on_another_and_miss_and_double_nothing(
    own_services_env: dict[str, str], tmp_path: Path
) -> None:
    """The api holding the sockets is SIGKILLed while events are written (no close frame, no
    shutdown): its project-stream and `/ws` clients reconnect to a second api with
    `after=<the last id received>`, and between them have every event once, in order."""
    env = {**own_services_env, "BOTARMY_RATE_LIMIT_PER_MINUTE": "1000000"}
    first, second = start_servers(env, [(free_port(), tmp_path / "api-1.log"), (free_port(), tmp_path / "api-2.log")])
    serving = [first]  # where clients (re)connect: the second api once the first is gone
    try:
        async with httpx.AsyncClient(base_url=second.url, headers=second.headers, timeout=20) as http:
            projects = [(await http.post("/api/v1/projects", json={"name": f"kill {n}"})).json()["id"] for n in (1, 2)]
        project_tallies = [(f"/ws/projects/{projects[n % 2]}", Tally()) for n in range(4)]  # two per project
        everything = Tally()
        stop_reading = asyncio.Event()

        def on_serving_api(path: str) -> Callable[[], str]:
            return lambda: serving[0].ws_url(path)

        readers = [
            asyncio.create_task(follow(on_serving_api(path), tally, stop_reading, after=0))
            for path, tally in [*project_tallies, ("/ws", everything)]
        ]
        tallies = [tally for _, tally in project_tallies] + [everything]
        await eventually(lambda: asyncio.sleep(0, [t.connections for t in tallies]), lambda c: min(c) == 1)
        async with (
            direct_writers(env, projects[0], writers=2) as committed_one,
            direct_writers(env, projects[1], writers=2) as committed_two,
        ):
            stop_writing = asyncio.Event()
            http_load = asyncio.create_task(http_writers(second, projects[1], stop_writing, clients=2))
            await asyncio.sleep(1.0)
            first.kill()  # SIGKILL: the sockets just drop
            serving[0] = second
            await eventually(lambda: asyncio.sleep(0, [t.connections for t in tallies]), lambda c: min(c) >= 2)
            await asyncio.sleep(1.0)
            stop_writing.set()
            await http_load
        expected = {project_id: await table_ids(env, project_id) for project_id in projects}
        all_ids = await table_ids(env)

        async def caught_up() -> bool:
            behind = [t for path, t in project_tallies if t.last < expected[path.rsplit("/", 1)[1]][-1]]
            return not behind and everything.last >= all_ids[-1]

        await eventually(caught_up, bool, timeout=20)
        stop_reading.set()
        await asyncio.gather(*readers)
    finally:
        first.stop()
        second.stop()
    assert min(committed_one[0], committed_two[0]) > 10, (committed_one, committed_two)
    assert all(None in t.close_codes for t in tallies), [t.close_codes for t in tallies]  # dropped, not closed
    for path, tally in project_tallies:
        assert tally.problems(expected[path.rsplit("/", 1)[1]]) == NO_PROBLEMS, path
    assert everything.problems(all_ids) == NO_PROBLEMS
    # Nothing foreign either: each project event reached its project's two clients, and every event /ws.
    assert sum(len(t.ids) for t in tallies) == len(all_ids) + 2 * sum(len(ids) for ids in expected.values())


async def test_the_hub_hands_events_on_in_id_order_and_reads_a_lost_one_from_the_table(
    embedded_env: dict[str, str],
) -> None:
    """Publishes that arrive out of order wait for the missing ids; one that never comes is read from
    the table. A feed that resumes in the middle gets the rest once, in order."""
    database = await migrated_database(embedded_env)
    project_id = uuid.uuid4()
    async with database.get_session() as session:
        for n in range(8):
            await EventService(session=session).record(
                "project_updated",
                project_id=project_id,
                data={"project_id": str(project_id), "changes": [f"c{n}"], "status": "active"},
            )
            await session.commit()  # one commit each: ids 1..8, nothing published (no publisher)
        rows = list(await session.scalars(select(Event).order_by(Event.id)))
    assert [row.id for row in rows] == list(range(1, 9))
    channels = ChannelsPlugin(backend=MemoryChannelsBackend(), arbitrary_channels_allowed=True)
    try:
        async with channels, contextlib.AsyncExitStack() as stack:
            hub = LiveHub(channels, database.get_session, gap_seconds=0.2)
            await hub.start()
            hub.position = 2  # as if this process had seen events 1 and 2 live
            live = Feed(database.get_session, [project_id], Filters(), max_backlog=100, heartbeat_seconds=10)
            resumed = Feed(database.get_session, None, Filters(), max_backlog=100, heartbeat_seconds=10)
            live_items = await stack.enter_async_context(live.open(hub, None))
            resumed_items = await stack.enter_async_context(resumed.open(hub, 1))
            for row in (rows[4], rows[3], rows[6], rows[7], rows[2]):  # 5, 4, 7, 8, 3; 6 is lost on the way
                channels.publish(encode_event(row), event_channels(project_id))

            async def ids(items: AsyncIterator[Any], count: int) -> list[int]:
                got: list[int] = []
                async for item in items:
                    if isinstance(item, FeedItem) and item.id is not None:
                        got.append(item.id)
                    if len(got) == count:
                        return got
                return got

            assert await asyncio.wait_for(ids(live_items, 6), 10) == [3, 4, 5, 6, 7, 8]
            assert await asyncio.wait_for(ids(resumed_items, 7), 10) == [2, 3, 4, 5, 6, 7, 8]
            assert hub.read_from_table == 1
            assert hub.position == 8
            await hub.close()
    finally:
        await database.get_engine().dispose()


async def test_deployments_sharing_a_redis_do_not_hear_each_others_events(services_env: dict[str, str]) -> None:
    """Channels are named under the namespace: Litestar's pub/sub backend alone would share `all`."""
    ours = load_settings(services_env).redis
    theirs = load_settings({**services_env, "BOTARMY_REDIS_NAMESPACE": f"other-{uuid.uuid4().hex[:8]}"}).redis
    heard: list[bytes] = []
    async with (
        ChannelsPlugin(backend=build_channels_backend(ours), arbitrary_channels_allowed=True) as mine,
        ChannelsPlugin(backend=build_channels_backend(theirs), arbitrary_channels_allowed=True) as other,
    ):
        subscriber = await mine.subscribe([GLOBAL_CHANNEL])

        async def listen() -> None:
            async for payload in subscriber.iter_events():
                heard.append(payload)

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.3)  # the subscription takes effect
        other.publish(b'{"id": 1, "event_type": "theirs"}', [GLOBAL_CHANNEL])
        mine.publish(b'{"id": 1, "event_type": "ours"}', [GLOBAL_CHANNEL])
        await eventually(lambda: asyncio.sleep(0, heard), bool, timeout=10)
        await asyncio.sleep(0.3)
        listener.cancel()
        await mine.unsubscribe(subscriber)
    assert heard == [b'{"id": 1, "event_type": "ours"}']

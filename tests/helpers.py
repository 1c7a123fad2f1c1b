"""Real processes (api, worker) for tests, and polling helpers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import websockets
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from sqlalchemy import select

from app.config import Settings, load_settings
from app.core.security import Role
from app.db.engine import build_db_config, upgrade_database_async
from app.events.models import Event
from app.main import create_app
from app.tokens.services import TokenService

REPO_ROOT = Path(__file__).resolve().parents[1]
BOTARMY = [sys.executable, "-m", "app"]
T = TypeVar("T")


class Process:
    """A child process in its own process group, so that a kill reaches its children too."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole group: no shutdown handler runs, nothing is acknowledged."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._log.close()


def start_worker(env: dict[str, str], log_path: Path) -> Process:
    return Process([*BOTARMY, "worker", "--workers", "1"], env, log_path)


class Server(Process):
    """A served api (`botarmy serve`) and an admin token for it."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        super().__init__([*BOTARMY, "serve", "--host", "127.0.0.1", "--port", str(port)], env, log_path)
        self.env = env
        self.port = port
        self.token = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def ws_url(self, path: str, token: str | None = None) -> str:
        return f"ws://127.0.0.1:{self.port}{path}?token={token or self.token}"


def start_server(env: dict[str, str], port: int, log_path: Path) -> Server:
    return start_servers(env, [(port, log_path)])[0]


def start_servers(env: dict[str, str], places: list[tuple[int, Path]]) -> list[Server]:
    """`botarmy serve` processes on one database, started side by side (each spends seconds importing)."""
    servers = [Server(env, port, log_path) for port, log_path in places]
    try:
        for server in servers:
            _wait_until_up(server)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    for server in servers:
        server.token = issued_token(env)
    return servers


def _wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + 60  # a busy machine: two test processes and their servers on two cores
    while time.monotonic() < deadline:
        if server.popen.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not start:\n{server.log()}")


def botarmy_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`botarmy ARGS` run to its end with the settings of `env`, its output captured."""
    return subprocess.run(
        [*BOTARMY, *args], cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def cli_token(env: dict[str, str], role: str = "admin", projects: tuple[str, ...] = (), name: str | None = None) -> str:
    """A new token from `botarmy token create`: the token is alone on the last line."""
    name = name or f"test-{role}-{uuid.uuid4().hex[:8]}"
    args = ["token", "create", "--name", name, "--role", role]
    for project in projects:
        args += ["--project", project]
    result = botarmy_command(env, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def issued_token(env: dict[str, str], role: str = "admin") -> str:
    """A new token written straight to the database of `env` (schema there), from sync or async code.

    Not `botarmy token create`: a process of its own costs 3 s of start-up, for every server a test
    starts. The command itself is tested where it is the subject (`cli_token`).
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, issue_token(load_settings(env), role)).result()


async def migrated_database(env: dict[str, str]) -> SQLAlchemyAsyncConfig:
    """The database of `env`, at the latest schema (the streams' hub reads the event table)."""
    settings = load_settings(env)
    await upgrade_database_async(settings.db)
    return build_db_config(settings.db)


async def issue_token(settings: Settings, role: str = "admin", projects: list[uuid.UUID] | None = None) -> str:
    """A new token written straight through the service, for in-process apps (schema already there)."""
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            _, secret = await TokenService(session=session).issue(
                f"test-{role}-{uuid.uuid4().hex[:8]}", Role(role), projects
            )
    finally:
        await config.get_engine().dispose()
    return secret


@contextlib.asynccontextmanager
async def app_client(
    settings: Settings, *, role: str | None = "admin", timeout: float = 20
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on this test's event loop, lifespan included, through httpx's ASGI transport.

    With `role`, the client carries a new token of that role. Not Litestar's `AsyncTestClient`:
    it runs the lifespan on an event loop of its own, in another thread, while requests run on
    the test's loop. What start-up made (connections, the publisher's and the sweeper's tasks)
    was then used from two loops, and shutdown blocked the test's loop while it closed
    connections that belonged to that loop.
    """
    app = create_app(settings)
    before = asyncio.all_tasks()
    started, stopping = asyncio.Event(), asyncio.Event()

    async def run_lifespan() -> None:
        # One task enters and leaves the lifespan: its task groups must be left where they were
        # entered, and pytest-asyncio sets a fixture up and tears it down in different tasks.
        async with app.lifespan():
            started.set()
            await stopping.wait()

    lifespan, up = asyncio.create_task(run_lifespan()), asyncio.create_task(started.wait())
    await asyncio.wait([lifespan, up], return_when=asyncio.FIRST_COMPLETED)
    up.cancel()
    if lifespan.done():
        lifespan.result()  # start-up failed: raise its error
    try:
        # Litestar types its scope and messages more narrowly than httpx's plain mappings.
        transport = httpx.ASGITransport(app=cast(Any, app))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=timeout) as client:
            if role is not None:
                client.headers["Authorization"] = f"Bearer {await issue_token(settings, role)}"
            yield client
    finally:
        stopping.set()
        await lifespan
        await _end_leftover_tasks(asyncio.all_tasks() - before)


LEFTOVER_TASK_SECONDS = 20.0


def _frames(task: asyncio.Task[Any]) -> str:
    return " <- ".join(f"{f.f_code.co_name} ({f.f_code.co_filename}:{f.f_lineno})" for f in task.get_stack())


async def _end_leftover_tasks(tasks: set[asyncio.Task[Any]]) -> None:
    """End what the app still runs after its shutdown (in-process jobs, their model calls).

    pytest-asyncio cancels a test's leftover tasks once and then waits for them without a bound: one
    that swallowed that cancellation (somewhere in a library's cleanup) hung CI until the 300 s
    test timeout. Here they are cancelled again until they end, and a task still running after
    LEFTOVER_TASK_SECONDS fails the test with its stack instead of hanging it.
    """
    pending = {task for task in tasks if task is not asyncio.current_task() and not task.done()}
    deadline = time.monotonic() + LEFTOVER_TASK_SECONDS
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    if pending:
        stacks = "\n".join(f"{task!r} at {_frames(task)}" for task in pending)
        raise AssertionError(f"tasks still running {LEFTOVER_TASK_SECONDS:.0f} s after the app stopped:\n{stacks}")


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], timeout: float = 15.0, interval: float = 0.05
) -> T:
    """Poll `probe` until `accept` says yes; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while not accept(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value: {value!r}")
        await asyncio.sleep(interval)
        value = await probe()
    return value


async def task_status(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_task(client: httpx.AsyncClient, task_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    return await eventually(lambda: task_status(client, task_id), lambda t: t["status"] == status, timeout)


class TcpProxy:
    """Forwards a local port to a target, and can drop everything: a service that goes away.

    Threads, not the test's event loop, so that it keeps forwarding whatever the loop is doing.
    """

    def __init__(self, target_port: int, listen_port: int) -> None:
        self.target_port = target_port
        self.listen_port = listen_port
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.listen_port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            doomed = [self._listener, *self._sockets] if self._listener else list(self._sockets)
            self._listener = None
            self._sockets.clear()
        for sock in doomed:
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)


async def clear_of_a_minute_boundary(seconds_needed: float = 20) -> None:
    """Wait, if needed, until the rate limit's one-minute window has `seconds_needed` left: a test that
    counts requests against the limit would otherwise see the count start afresh halfway through."""
    into_minute = time.time() % 60
    if into_minute > 60 - seconds_needed:
        await asyncio.sleep(60 - into_minute + 0.5)


async def table_ids(env: dict[str, str], project_id: str | None = None) -> list[int]:
    """The event ids of the database of `env` (of one project, or all), in id order."""
    config = build_db_config(load_settings(env).db)
    try:
        async with config.get_session() as session:
            statement = select(Event.id).order_by(Event.id)
            if project_id is not None:
                statement = statement.where(Event.project_id == uuid.UUID(project_id))
            return list(await session.scalars(statement))
    finally:
        await config.get_engine().dispose()


class Tally:
    """What a stream client received over all its connections: ids in arrival order."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.reconnections = 0
        self.connections = 0
        self.close_codes: list[int | None] = []
        self.slowest_close = 0.0

    def add(self, message: str | bytes) -> bool:
        """Count an event (True); heartbeats and live model output carry no id."""
        event = json.loads(message)
        if event.get("id") is None:
            return False
        self.ids.append(event["id"])
        return True

    @property
    def last(self) -> int:
        return self.ids[-1] if self.ids else 0

    def problems(self, expected: list[int]) -> dict[str, Any]:
        """The first (up to 20) ids missing, doubled, and the pairs that went backwards."""
        seen: set[int] = set()
        doubled = [i for i in self.ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        backwards = [(a, b) for a, b in zip(self.ids, self.ids[1:], strict=False) if b <= a]
        missing = sorted(set(expected) - seen)
        return {"missing": missing[:20], "doubled": doubled[:20], "backwards": backwards[:20]}

    def counts(self, expected: list[int]) -> dict[str, int]:
        """How many ids were received, missing, doubled, and went backwards (for a drill's totals)."""
        doubled = len(self.ids) - len(set(self.ids))
        backwards = sum(1 for a, b in zip(self.ids, self.ids[1:], strict=False) if b <= a)
        return {
            "received": len(self.ids),
            "lost": len(set(expected) - set(self.ids)),
            "doubled": doubled,
            "out_of_order": backwards,
        }


NO_PROBLEMS: dict[str, Any] = {"missing": [], "doubled": [], "backwards": []}


async def follow(
    url: Callable[[], str], tally: Tally, stop: asyncio.Event, *, after: int | None = None, drop_every: int = 0
) -> None:
    """Read one stream until `stop`, over as many connections as it takes, as a client should.

    `url()` is asked afresh for every connection (the api to use may change). A connection that
    ends (the server went away, or this client drops it every `drop_every` events) is resumed with
    `after=<the last id received>` (the first one with `after`, if given); one that cannot be opened
    (the server is down, or refuses for now) is tried again shortly after.
    """
    while not stop.is_set():
        resume = tally.last if tally.ids else after
        address = url() + ("" if resume is None else f"&after={resume}")
        try:
            async with websockets.connect(address, max_size=None, open_timeout=10) as ws:
                tally.connections += 1
                received = 0
                while not stop.is_set() and not (drop_every and received >= drop_every):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.3):  # not wait_for: on 3.11 it can swallow a cancellation
                            received += tally.add(await ws.recv())
        except websockets.ConnectionClosed as closed:
            tally.close_codes.append(closed.rcvd.code if closed.rcvd else None)
        except (OSError, websockets.InvalidHandshake, TimeoutError):
            await asyncio.sleep(0.1)

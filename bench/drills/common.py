"""What the drills share: real processes on PostgreSQL + Redis, resuming clients, and the checks.

Processes, the database and the Redis namespace come from `bench.status_bench` (own database and
namespace per run, dropped and deleted whatever happens).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import websockets
from sqlalchemy import select

from app.config import load_settings
from app.core.channels import BackendPublisher, build_channels_backend
from app.db.engine import build_db_config
from app.events.models import Event
from app.events.services import EventService
from bench.status_bench import RESULTS_DIR, git_head, machine

T = TypeVar("T")
REFUSED: collections.Counter[str] = collections.Counter()  # writes answered 503, by kind
RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def stop_on_signals() -> None:
    """SIGTERM unwinds like Ctrl-C: through the finally blocks (processes stopped, database dropped)."""

    def _terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGUSR1, _print_tasks)


def _print_tasks(_signum: int, _frame: Any) -> None:
    """SIGUSR1: where the drill's tasks wait, except its clients reading (a drill that hangs shows why)."""
    try:
        tasks = list(asyncio.all_tasks(asyncio.get_running_loop()))
    except RuntimeError:
        return
    for task in tasks:
        frames = [
            f"{f.f_code.co_name} ({f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno})" for f in task.get_stack()
        ]
        if not any(name.startswith(("follow", "steady_client", "churn_client", "recv")) for name in frames):
            print(f"task {task.get_name()}: {' <- '.join(frames)}", file=sys.stderr, flush=True)


@dataclass
class Tally:
    """What one client received over all its connections: ids in arrival order."""

    name: str
    ids: list[int] = field(default_factory=list)
    connections: int = 0
    slowest_close: float = 0.0
    close_codes: list[int | None] = field(default_factory=list)

    def add(self, message: str | bytes) -> None:
        event = json.loads(message)
        if event.get("id") is not None:
            self.ids.append(event["id"])

    @property
    def highest(self) -> int:
        return max(self.ids, default=0)

    def check(self, expected: list[int]) -> dict[str, int]:
        """Lost, doubled and out-of-order counts against the ids the client should have."""
        seen: set[int] = set()
        doubled = 0
        for event_id in self.ids:
            doubled += event_id in seen
            seen.add(event_id)
        backwards = sum(1 for a, b in zip(self.ids, self.ids[1:], strict=False) if b <= a)
        lost_ids = sorted(set(expected) - seen)
        if lost_ids:
            log(f"{self.name}: lost {lost_ids[:40]}")
        unexpected = len(seen - set(expected))
        return {
            "received": len(self.ids),
            "lost": len(lost_ids),
            "doubled": doubled,
            "out_of_order": backwards,
            "unexpected": unexpected,
        }


async def connect(url: str) -> Any:
    """A WebSocket connection, retried with short delays (the server may be restarting)."""
    for delay in (*RECONNECT_DELAYS, *([1.0] * 30)):
        try:
            return await websockets.connect(url, max_size=None, open_timeout=10)
        except (OSError, websockets.InvalidHandshake, TimeoutError):
            await asyncio.sleep(delay)
    return await websockets.connect(url, max_size=None, open_timeout=10)


async def churn_client(url: str, tally: Tally, stop: asyncio.Event, every: int) -> None:
    """Drops its connection every `every` messages and reconnects with after=<highest id seen>.

    It closes in the middle of the stream, reading on until the server's close frame comes, and
    counts what came meanwhile: the time the close took is the server's answer to it.
    """
    while not stop.is_set():
        ws = await connect(f"{url}&after={tally.highest}")
        tally.connections += 1
        try:
            for _ in range(every):
                try:
                    async with asyncio.timeout(2):
                        tally.add(await ws.recv())
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
        except websockets.ConnectionClosed:
            tally.close_codes.append(ws.close_code)


async def steady_client(url: str, tally: Tally, stop: asyncio.Event) -> None:
    """Stays connected; reconnects with after=<highest id seen> only when the server goes away."""
    while not stop.is_set():
        ws = await connect(f"{url}&after={tally.highest}" if tally.ids else url)
        tally.connections += 1
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):  # not wait_for: on 3.11 it can swallow a cancellation
                        tally.add(await ws.recv())
        except websockets.ConnectionClosed:
            tally.close_codes.append(ws.close_code)
        finally:
            await ws.close()


async def read_up_to(url: str, tally: Tally, last: int, seconds: float = 30) -> None:
    """Reconnect once more with after=<highest seen> and read up to `last`."""
    if tally.highest >= last:
        return
    ws = await connect(f"{url}&after={tally.highest}")
    try:
        async with asyncio.timeout(seconds):
            while tally.highest < last:
                tally.add(await ws.recv())
    finally:
        await ws.close()


async def event_ids(env: dict[str, str], project_id: str | None = None, after: int = 0) -> list[int]:
    config = build_db_config(load_settings(env).db)
    try:
        async with config.get_session() as session:
            statement = select(Event.id).where(Event.id > after).order_by(Event.id)
            if project_id is not None:
                statement = statement.where(Event.project_id == uuid.UUID(project_id))
            return list(await session.scalars(statement))
    finally:
        await config.get_engine().dispose()


@contextlib.asynccontextmanager
async def direct_writers(env: dict[str, str], project_id: str, writers: int) -> AsyncIterator[list[int]]:
    """`writers` tasks committing two `project_updated` events at a time straight to the database,
    publishing through Redis, as a worker process does. Yields the count of commits so far."""
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
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(write()) for _ in range(writers)]
    try:
        yield committed
    finally:
        stop.set()
        # Bounded: a drill reports where it got stuck instead of hanging there.
        for name, step in (
            ("the direct writers' last commits", asyncio.gather(*tasks, return_exceptions=True)),
            ("the direct writers' publisher", publisher.stop()),
            ("the direct writers' engine", config.get_engine().dispose()),
        ):
            try:
                await asyncio.wait_for(step, 30)
            except TimeoutError:
                log(f"WARNING: {name} did not finish within 30 s")


async def submit_tasks(
    http: httpx.AsyncClient, project_id: str, count: int, at_a_time: int, instructions: str
) -> list[str]:
    """`count` coder tasks through the API, `at_a_time` requests in flight."""
    numbers = iter(range(count))
    ids: list[str] = []

    async def one() -> None:
        for n in numbers:
            response = await http.post(
                f"/api/v1/projects/{project_id}/tasks",
                json={"agent_type": "coder", "instructions": f"{instructions} #{n}"},
            )
            if response.status_code == 503:  # the api says it is overloaded (database pool): counted, not fatal
                REFUSED[response.request.url.path.rsplit("/", 1)[-1]] += 1
                continue
            response.raise_for_status()
            ids.append(response.json()["task_id"])

    await asyncio.gather(*(one() for _ in range(at_a_time)))
    return ids


async def wait_for_tasks(http: httpx.AsyncClient, task_ids: list[str], seconds: float) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    statuses: dict[str, int] = {}
    while time.monotonic() < deadline:
        statuses = {}
        for task_id in task_ids:
            status = (await http.get(f"/api/v1/tasks/{task_id}")).json()["status"]
            statuses[status] = statuses.get(status, 0) + 1
        if statuses.get("completed", 0) == len(task_ids):
            break
        await asyncio.sleep(0.5)
    return statuses


def log_problems(log_dir: Path) -> None:
    """The warnings and errors the processes logged (their logs are removed with the drill's directory);
    for a traceback, its last line (the exception)."""
    for path in sorted(log_dir.glob("**/*.log")):
        lines = path.read_text(errors="replace").splitlines()
        problems = []
        for n, line in enumerate(lines):
            if "Traceback" in line:
                end = next((m for m in range(n + 1, len(lines)) if not lines[m].startswith((" ", "Traceback"))), n)
                problems.append(f"traceback ending: {lines[end]}")
            elif "warning" in line or "error" in line:
                problems.append(line)
        log(f"{path.name}: {len(lines)} lines, {len(problems)} warnings, errors or tracebacks")
        for line in problems[:20]:
            print(f"    {line[:300]}")


def verdict(name: str, checks: dict[str, Any], failures: list[str], started: float) -> int:
    """Print the checks, write them to bench/results/, and the exit status: 1 if anything failed."""
    took = round(time.monotonic() - started, 1)
    result = {
        "drill": name,
        "commit": git_head(),
        "machine": machine(),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(),
        "seconds": took,
        "checks": {**checks, "writes_refused_503": dict(REFUSED)},
        "failures": failures,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"drill-{name}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({**checks, "writes_refused_503": dict(REFUSED)}, indent=2))
    if failures:
        for failure in failures:
            log(f"FAILED: {failure}")
        log(f"{name}: FAILED in {took} s ({path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path})")
        return 1
    log(f"{name}: passed in {took} s ({path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path})")
    return 0


async def guarded(drill: Coroutine[Any, Any, T]) -> T:
    """Run a drill, then end every task it left (its clients), whatever happened: a drill that
    fails ends with its error instead of hanging in `asyncio.run`'s cleanup."""
    try:
        return await drill
    finally:
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=15)


async def until(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll `condition` (the clients' tallies) until it holds or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True

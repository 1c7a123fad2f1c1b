"""Drill: SIGTERM during a workload, for a worker and for an api.

    .venv/bin/python -m bench.drills.sigterm [--tasks 12] [--grace 8]

Worker: two `botarmy worker` processes, tasks of 2-12 s running on both; the supervisor of one
gets SIGTERM (as `podman stop` sends it to PID 1). Checked: it exits 0 within the grace period;
what it could not finish was handed back and started by the other worker at once (reported: the
time from the hand-back to the next attempt); every task completes exactly once.

Api: two `botarmy serve` processes; a client submits tasks to the first and, when it stops
answering, to the second; the first gets SIGTERM mid-way. Checked: it exits within the grace
period; every task the client was told was accepted (201) completes exactly once, and nothing is
stored that no 201 announced. Exit code 1 if anything fails.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path
from tempfile import mkdtemp

import httpx
from sqlalchemy import select

from app.config import load_settings
from app.db.engine import build_db_config
from app.events.models import Event
from bench.drills.tasks_common import audit, event_times, report, say, services, submit, wait_all_done, wait_for_log
from tests.conftest import free_port
from tests.helpers import Process, Server, start_server, start_worker


async def stopped_within(process: Process, signum: signal.Signals) -> tuple[int | None, float]:
    started = time.monotonic()
    process.popen.send_signal(signum)
    try:
        code = await asyncio.to_thread(process.popen.wait, 30)
    except Exception:
        return None, time.monotonic() - started
    return code, time.monotonic() - started


async def handback_delays(env: dict[str, str]) -> list[float]:
    config = build_db_config(load_settings(env).db)
    delays: list[float] = []
    try:
        async with config.get_session() as session:
            for task_id, handed_at in await event_times(env, "worker stopping; handed back"):
                started = await session.scalar(
                    select(Event.created_at)
                    .where(
                        Event.task_id == uuid.UUID(task_id),
                        Event.created_at > handed_at,
                        Event.data["message"].as_string() == "working",
                    )
                    .order_by(Event.id)
                    .limit(1)
                )
                if started is not None:
                    delays.append((started - handed_at).total_seconds())
    finally:
        await config.get_engine().dispose()
    return delays


async def worker_drill(env: dict[str, str], tasks: int, grace: float, logs: Path) -> int:
    server = await asyncio.to_thread(start_server, env, free_port(), logs / "api.log")
    first, second = (start_worker(env, logs / f"worker-{n}.log") for n in range(2))
    task_ids: list[str] = []
    problems: list[str] = []
    try:
        await wait_for_log(first, "worker_started")
        await wait_for_log(second, "worker_started")
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=15) as client:
            project = (await client.post("/api/v1/projects", json={"name": "sigterm worker"})).json()
            for n in range(tasks):
                task_id = await submit(client, project["id"], f"task {n} [[offline:delay={2 + n % 6 * 2}]]")
                if task_id is not None:
                    task_ids.append(task_id)
            await asyncio.sleep(1.5)
            say(f"SIGTERM to worker supervisor {first.popen.pid}")
            code, took = await stopped_within(first, signal.SIGTERM)
            say(f"it exited with {code} after {took:.2f} s")
            if code != 0:
                problems.append(f"the worker exited with {code}")
            if took > grace + 1:
                problems.append(f"the worker took {took:.2f} s to stop (grace {grace:g} s)")
            if not await wait_all_done(client, task_ids, within=90):
                problems.append("not every task finished")
    finally:
        server.stop()
        first.kill()
        second.stop()
    result = await audit(env, task_ids)
    result.problems = problems + result.problems
    delays = await handback_delays(env) or [float("nan")]
    if result.handed_back == 0:
        result.problems.append("no task was handed back (the drill's tasks are meant to outlast the grace)")
    rows = [
        ("grace period", f"{grace:g} s"),
        ("worker exit code / time after SIGTERM", f"{code} / {took:.2f} s"),
        ("tasks handed back", str(result.handed_back)),
        (
            "hand-back -> next attempt, s",
            f"max {max(delays):.2f}, all {sorted(round(d, 2) for d in delays)}" if delays else "-",
        ),
    ]
    return report("worker SIGTERM drill", rows, result)


async def api_drill(env: dict[str, str], tasks: int, grace: float, logs: Path) -> int:
    worker = start_worker(env, logs / "api-drill-worker.log")
    apis: list[Server] = [
        await asyncio.to_thread(start_server, env, free_port(), logs / f"api-{n}.log") for n in range(2)
    ]
    task_ids: list[str] = []
    problems: list[str] = []
    code: int | None = None
    took = 0.0
    failovers = 0
    try:
        headers = apis[0].headers
        async with httpx.AsyncClient(headers=headers, timeout=15) as client:
            project = (await client.post(f"{apis[0].url}/api/v1/projects", json={"name": "sigterm api"})).json()
            stopping: asyncio.Task[tuple[int | None, float]] | None = None
            target = 0
            for n in range(tasks):
                if n == tasks // 3:
                    say(f"SIGTERM to api {apis[0].popen.pid}")
                    stopping = asyncio.create_task(stopped_within(apis[0], signal.SIGTERM))
                while True:
                    client.base_url = httpx.URL(apis[target].url)
                    try:
                        task_id = await submit(client, project["id"], f"api task {n} [[offline:delay=0.5]]")
                    except httpx.TransportError:
                        target, failovers = 1, failovers + 1  # the stopped api: go to the other one
                        continue
                    if task_id is None:
                        target, failovers = 1, failovers + 1  # refused while shutting down
                        continue
                    task_ids.append(task_id)
                    break
                await asyncio.sleep(0.2)
            if stopping is not None:
                code, took = await stopping
            say(f"the api exited with {code} after {took:.2f} s")
            if code is None or took > grace + 1:
                problems.append(f"the api did not stop within {grace:g} s (code {code}, {took:.2f} s)")
            client.base_url = httpx.URL(apis[1].url)
            if not await wait_all_done(client, task_ids, within=90):
                problems.append("not every task finished")
    finally:
        for api in apis:
            api.stop()
        worker.stop()
    result = await audit(env, task_ids)
    result.problems = problems + result.problems
    rows = [
        ("api exit code / time after SIGTERM", f"{code} / {took:.2f} s"),
        ("client fail-overs to the other api", str(failovers)),
    ]
    return report("api SIGTERM drill", rows, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--grace", type=float, default=8.0)
    args = parser.parse_args()
    logs = Path(mkdtemp(prefix="botarmy-drill-sigterm-"))
    say(f"process logs in {logs}")
    extra = {"BOTARMY_WORKER_GRACE_SECONDS": str(args.grace), "BOTARMY_TASK_LEASE_SECONDS": "30"}
    with services("sigterm", extra) as env:
        code = asyncio.run(worker_drill(env, args.tasks, args.grace, logs))
    with services("sigterm-api", extra) as env:
        code |= asyncio.run(api_drill(env, args.tasks, args.grace, logs))
    sys.exit(code)


if __name__ == "__main__":
    main()

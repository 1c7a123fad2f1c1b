"""Drill: SIGTERM during a workload, for a worker and for an api.

    .venv/bin/python -m bench.drills.sigterm [--tasks 12] [--grace 8] [--handback-bound 2]
                                             [--api-grace 8] [--clients 20]

Worker: two `botarmy worker` processes, tasks of 2-12 s running on both; the supervisor of one
gets SIGTERM (as `podman stop` sends it to PID 1). Checked: it exits 0 within the grace period;
what it could not finish was handed back and started by the other worker at once (the time from
the hand-back to the next attempt, at most `--handback-bound` seconds); every task completes
exactly once, its events in order.

Api: two `botarmy serve` processes; a client submits tasks to the first and, when it stops
answering, to the second; `--clients` WebSocket clients on the project's stream and one on `/ws`
follow the first. The first gets SIGTERM mid-way. Checked: it exits by the signal (uvicorn
re-raises it: -15/143) or 0, within BOTARMY_API_GRACE_SECONDS + 2 s; it closes every socket with
1001 and the clients resume on the second api with `after=<the last id received>`, between them
missing, doubling and reordering nothing; every task the client was told was accepted (201)
completes exactly once, and nothing is stored that no 201 announced. Exit code 1 if anything fails.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from tempfile import mkdtemp

import httpx
from sqlalchemy import select

from app.config import load_settings
from app.db.engine import build_db_config
from app.events.models import Event
from bench.drills.tasks_common import audit, event_times, report, say, services, submit, wait_all_done, wait_for_log
from tests.conftest import free_port
from tests.helpers import (
    Process,
    Server,
    Tally,
    eventually,
    follow,
    start_server,
    start_servers,
    start_worker,
    table_ids,
)

API_EXIT_SLACK_SECONDS = 2.0  # past the api's grace: uvicorn's own shutdown steps
API_EXIT_CODES = (0, -signal.SIGTERM, 128 + signal.SIGTERM)  # uvicorn ends by the signal it caught


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


async def worker_drill(env: dict[str, str], tasks: int, grace: float, handback_bound: float, logs: Path) -> int:
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
    delays = await handback_delays(env)
    if result.handed_back == 0:
        result.problems.append("no task was handed back (the drill's tasks are meant to outlast the grace)")
    elif len(delays) < result.handed_back:
        result.problems.append(f"{result.handed_back - len(delays)} handed-back task(s) never started again")
    late = [d for d in delays if d > handback_bound]
    if late:
        result.problems.append(f"{len(late)} handed-back task(s) started over {handback_bound:g} s later: {late}")
    rows = [
        ("grace period", f"{grace:g} s"),
        ("worker exit code / time after SIGTERM", f"{code} / {took:.2f} s"),
        ("tasks handed back", str(result.handed_back)),
        (
            f"hand-back -> next attempt, s (bound {handback_bound:g})",
            f"max {max(delays):.2f}, all {sorted(round(d, 2) for d in delays)}" if delays else "-",
        ),
    ]
    return report("worker SIGTERM drill", rows, result)


async def api_drill(env: dict[str, str], tasks: int, clients: int, logs: Path) -> int:
    api_grace = float(env["BOTARMY_API_GRACE_SECONDS"])
    worker = start_worker(env, logs / "api-drill-worker.log")
    apis: list[Server] = await asyncio.to_thread(
        start_servers, env, [(free_port(), logs / f"api-{n}.log") for n in range(2)]
    )
    serving = [apis[0]]  # where the stream clients (re)connect: the second api once the first is told to stop
    task_ids: list[str] = []
    problems: list[str] = []
    code: int | None = None
    took = 0.0
    failovers = 0
    project_tallies = [Tally() for _ in range(clients)]
    everything = Tally()
    stop_reading = asyncio.Event()
    readers: list[asyncio.Task[None]] = []
    try:
        headers = apis[0].headers
        async with httpx.AsyncClient(headers=headers, timeout=15) as client:
            project = (await client.post(f"{apis[0].url}/api/v1/projects", json={"name": "sigterm api"})).json()

            def on_serving_api(path: str) -> Callable[[], str]:
                return lambda: serving[0].ws_url(path)

            project_stream = on_serving_api(f"/ws/projects/{project['id']}")
            readers = [asyncio.create_task(follow(project_stream, t, stop_reading, after=0)) for t in project_tallies]
            readers.append(asyncio.create_task(follow(on_serving_api("/ws"), everything, stop_reading, after=0)))
            connected = lambda: asyncio.sleep(0, min(t.connections for t in [*project_tallies, everything]))  # noqa: E731
            await eventually(connected, bool, timeout=30)
            stopping: asyncio.Task[tuple[int | None, float]] | None = None
            target = 0
            for n in range(tasks):
                if n == tasks // 3:
                    say(f"SIGTERM to api {apis[0].popen.pid} with {clients + 1} WebSocket clients")
                    serving[0] = apis[1]
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
            if code not in API_EXIT_CODES:
                problems.append(f"the api exited with {code}, not one of {API_EXIT_CODES}")
            if took > api_grace + API_EXIT_SLACK_SECONDS:
                bound = api_grace + API_EXIT_SLACK_SECONDS
                problems.append(f"the api took {took:.2f} s to stop (at most {bound:g} s: grace {api_grace:g} s)")
            client.base_url = httpx.URL(apis[1].url)
            if not await wait_all_done(client, task_ids, within=90):
                problems.append("not every task finished")
        expected = await table_ids(env, project["id"])
        all_ids = await table_ids(env)
        deadline = time.monotonic() + 30
        tallies = [*project_tallies, everything]
        while any(t.last < (all_ids if t is everything else expected)[-1] for t in tallies):
            if time.monotonic() > deadline:
                problems.append("the stream clients did not catch up within 30 s")
                break
            await asyncio.sleep(0.1)
    finally:
        stop_reading.set()
        await asyncio.gather(*readers, return_exceptions=True)
        for api in apis:
            api.stop()
        worker.stop()
    totals = {"received": 0, "lost": 0, "doubled": 0, "out_of_order": 0}
    for tally in project_tallies:
        for key, value in tally.counts(expected).items():
            totals[key] += value
    global_counts = everything.counts(all_ids)
    problems += [f"project clients: {value} {key}" for key, value in totals.items() if key != "received" and value]
    problems += [f"/ws client: {value} {key}" for key, value in global_counts.items() if key != "received" and value]
    going_away = sum(1 for t in tallies if t.close_codes[:1] == [1001])
    resumed = sum(1 for t in tallies if t.connections >= 2)
    if going_away != len(tallies):
        codes = [t.close_codes[:1] for t in tallies]
        problems.append(f"{len(tallies) - going_away} client(s) not closed with 1001 first: {codes}")
    if resumed != len(tallies):
        problems.append(f"{len(tallies) - resumed} client(s) never resumed on the second api")
    result = await audit(env, task_ids)
    result.problems = problems + result.problems
    rows = [
        ("api exit code / time after SIGTERM", f"{code} / {took:.2f} s (grace {api_grace:g} s)"),
        ("client fail-overs to the other api", str(failovers)),
        ("ws clients closed with 1001 / resumed", f"{going_away} / {resumed} of {len(tallies)}"),
        ("events: project clients (total), /ws", f"{totals['received']}, {global_counts['received']}"),
        (
            "lost / doubled / out of order",
            f"{totals['lost'] + global_counts['lost']} / {totals['doubled'] + global_counts['doubled']} / "
            f"{totals['out_of_order'] + global_counts['out_of_order']}",
        ),
    ]
    return report("api SIGTERM drill", rows, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--grace", type=float, default=8.0, help="the worker's grace (BOTARMY_WORKER_GRACE_SECONDS)")
    parser.add_argument(
        "--handback-bound", type=float, default=2.0, help="longest hand-back -> next attempt accepted, s"
    )
    parser.add_argument("--api-grace", type=float, default=8.0, help="the api's grace (BOTARMY_API_GRACE_SECONDS)")
    parser.add_argument("--clients", type=int, default=20, help="WebSocket clients on the project's stream")
    args = parser.parse_args()
    logs = Path(mkdtemp(prefix="botarmy-drill-sigterm-"))
    say(f"process logs in {logs}")
    extra = {
        "BOTARMY_WORKER_GRACE_SECONDS": str(args.grace),
        "BOTARMY_API_GRACE_SECONDS": str(args.api_grace),
        "BOTARMY_TASK_LEASE_SECONDS": "30",
    }
    with services("sigterm", extra) as env:
        code = asyncio.run(worker_drill(env, args.tasks, args.grace, args.handback_bound, logs))
    with services("sigterm-api", extra) as env:
        code |= asyncio.run(api_drill(env, args.tasks, args.clients, logs))
    sys.exit(code)


if __name__ == "__main__":
    main()

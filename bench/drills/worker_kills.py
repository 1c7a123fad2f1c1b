"""Drill: SIGKILL a worker again and again under a running workload (two workers).

    .venv/bin/python -m bench.drills.worker_kills [--kills 50] [--interval 2.5] [--tasks-per-kill 2]

One api (`botarmy serve`) and two `botarmy worker` processes on a PostgreSQL database and a Redis
namespace of the drill's own. Tasks (offline model, 1-2 s each) are submitted all along; every
`--interval` seconds one worker (each in turn) is killed with SIGKILL (its whole process group:
nothing runs a shutdown handler) and started again at once; the next kill comes `--interval`
seconds after that worker is up again. At the end every task must be
completed exactly once. Reported: for each task a kill took away, the time from the kill to the
start of its next attempt (lease expiry + sweep + claim). Exit code 1 if anything was lost, doubled
or out of order (`tasks_common.order_problems`: each task's events, in id order, a story that could
have happened).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
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
from tests.helpers import Process, start_server, start_worker


async def restart_delays(env: dict[str, str], kills: list[datetime.datetime]) -> list[float]:
    """For each task requeued after a kill: seconds from that kill to the task's next `working`."""
    lost = await event_times(env, "worker lost; requeued")
    config = build_db_config(load_settings(env).db)
    delays: list[float] = []
    try:
        async with config.get_session() as session:
            for task_id, requeued_at in lost:
                killed_at = max((k for k in kills if k <= requeued_at), default=None)
                started = await session.scalar(
                    select(Event.created_at)
                    .where(
                        Event.task_id == uuid.UUID(task_id),
                        Event.created_at > requeued_at,
                        Event.data["message"].as_string() == "working",
                    )
                    .order_by(Event.id)
                    .limit(1)
                )
                if killed_at is not None and started is not None:
                    delays.append((started - killed_at).total_seconds())
    finally:
        await config.get_engine().dispose()
    return delays


async def drill(env: dict[str, str], kills: int, interval: float, tasks_per_kill: int, logs: Path) -> int:
    server = start_server(env, free_port(), logs / "api.log")
    workers: list[Process] = [start_worker(env, logs / f"worker-{n}.log") for n in range(2)]
    task_ids: list[str] = []
    kill_times: list[datetime.datetime] = []
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=30) as client:
            project = (await client.post("/api/v1/projects", json={"name": "kill drill"})).json()
            say(f"api {server.url}, workers pid {[w.popen.pid for w in workers]}; {kills} kills every {interval} s")
            for n in range(kills):
                for _ in range(tasks_per_kill):
                    delay = 1 + (len(task_ids) % 3) / 2
                    task_id = await submit(client, project["id"], f"task {len(task_ids)} [[offline:delay={delay}]]")
                    if task_id is None:
                        say("the api refused a task")
                        return 1
                    task_ids.append(task_id)
                await asyncio.sleep(interval)
                slot = n % 2
                workers[slot].kill()
                kill_times.append(datetime.datetime.now(datetime.UTC))
                workers[slot] = start_worker(env, logs / f"worker-{slot}-{n}.log")
                # The next kill only once this one is back: two workers down at once measures start-up.
                await wait_for_log(workers[slot], "worker_started")
                if (n + 1) % 10 == 0:
                    say(f"{n + 1} kills, {len(task_ids)} tasks submitted")
            say(f"all {kills} kills done; waiting for {len(task_ids)} tasks")
            started = time.monotonic()
            done = await wait_all_done(client, task_ids, within=180)
            finished = "all finished" if done else "NOT all finished"
            say(f"tasks {finished} {time.monotonic() - started:.1f} s after the last kill")
    finally:
        server.stop()
        for worker in workers:
            worker.stop()
    result = await audit(env, task_ids)
    delays = await restart_delays(env, kill_times)
    rows = [
        ("kills (SIGKILL, process group)", str(len(kill_times))),
        ("tasks submitted", str(len(task_ids))),
        ("attempts in all", str(result.attempts)),
        ("tasks taken away by a kill (requeued)", str(result.requeued_lost)),
    ]
    if delays:
        ordered = sorted(delays)
        rows.append(
            (
                "kill -> restart of the lost task, s",
                f"median {statistics.median(ordered):.2f}, p90 {ordered[int(0.9 * (len(ordered) - 1))]:.2f}, "
                f"max {ordered[-1]:.2f} (lease {env['BOTARMY_TASK_LEASE_SECONDS']} s, sweep every "
                f"{env['BOTARMY_SWEEP_INTERVAL_SECONDS']} s)",
            )
        )
    return report("worker kill drill", rows, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.5, help="seconds after a restarted worker is up")
    parser.add_argument("--tasks-per-kill", type=int, default=2, help="tasks submitted before each kill")
    args = parser.parse_args()
    logs = Path(mkdtemp(prefix="botarmy-drill-kills-"))
    say(f"process logs in {logs}")
    with services("kills") as env:
        code = asyncio.run(drill(env, args.kills, args.interval, args.tasks_per_kill, logs))
    sys.exit(code)


if __name__ == "__main__":
    main()

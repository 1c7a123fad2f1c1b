"""Drill: one project, many concurrent writers, clients that drop and resume with `after`.

    .venv/bin/python -m bench.drills.resume_churn --seconds 60

An api and a worker (`botarmy serve`, `botarmy worker`) on a PostgreSQL database and a Redis
namespace of their own. For `--seconds`: coder tasks submitted through the API `--at-a-time` at a
time (`--tasks` per round, the worker runs them), `--writers` direct writers committing events
straight to the database and publishing through Redis, and project updates through the API.
Meanwhile: a churning client on `/ws/projects/{id}` that drops its connection every `--every`
messages (closing in the middle of the stream) and reconnects with `after=<highest id seen>`, a
steady client on the same stream and one on `/ws`. At the end every client reads up to the last
event, and what each received is compared with the event table: lost, doubled, out of order.
Exits 1 on any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.drills.common import (
    Tally,
    churn_client,
    direct_writers,
    event_ids,
    guarded,
    log,
    log_problems,
    read_up_to,
    steady_client,
    stop_on_signals,
    submit_tasks,
    until,
    verdict,
    wait_for_tasks,
)
from bench.status_bench import create_admin_token, services_environment, start_api, start_worker


async def drill(
    env: dict[str, str], base_url: str, token: str, args: argparse.Namespace
) -> tuple[dict[str, Any], list[str]]:
    headers = {"Authorization": f"Bearer {token}"}
    ws_base = base_url.replace("http://", "ws://")
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        project_id = (await http.post("/api/v1/projects", json={"name": "resume churn"})).json()["id"]
        first_id = (await event_ids(env, project_id))[0]
        project_url = f"{ws_base}/ws/projects/{project_id}?token={token}"
        global_url = f"{ws_base}/ws?token={token}"
        churned, steady, everything = Tally("churn"), Tally("steady"), Tally("global")
        stop_churn, stop_steady = asyncio.Event(), asyncio.Event()
        clients = [
            asyncio.create_task(churn_client(f"{project_url}", churned, stop_churn, args.every)),
            asyncio.create_task(steady_client(f"{project_url}&after={first_id}", steady, stop_steady)),
            asyncio.create_task(steady_client(f"{global_url}&after={first_id - 1}", everything, stop_steady)),
        ]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        task_ids: list[str] = []
        updates = 0

        async def tasks_load() -> None:
            while time.monotonic() - started < args.seconds:
                task_ids.extend(await submit_tasks(http, project_id, args.tasks, args.at_a_time, "churn"))
                await asyncio.sleep(1.0)

        async def updates_load() -> None:
            nonlocal updates
            while time.monotonic() - started < args.seconds:
                response = await http.patch(f"/api/v1/projects/{project_id}", json={"description": f"u{updates}"})
                response.raise_for_status()
                updates += 1

        log(
            f"project {project_id}: {args.seconds:.0f} s of tasks "
            f"({args.tasks} per round, {args.at_a_time} at a time), "
            f"{args.writers} direct writers, project updates; churn client every {args.every} messages"
        )
        async with direct_writers(env, project_id, args.writers) as committed:
            await asyncio.gather(tasks_load(), updates_load(), updates_load())
        log(f"writing stopped: {len(task_ids)} tasks submitted, {committed[0]} direct commits, {updates} updates")
        statuses = await wait_for_tasks(http, task_ids, seconds=120)
        log(f"tasks: {statuses}")
        stop_churn.set()
        await clients[0]
        expected = await event_ids(env, project_id)
        everything_expected = await event_ids(env, None, after=first_id - 1)
        await read_up_to(project_url, churned, expected[-1])
        await until(lambda: steady.highest >= expected[-1] and everything.highest >= everything_expected[-1], 60)
        stop_steady.set()
        await asyncio.gather(*clients[1:])
    checks = {
        "seconds": args.seconds,
        "events_in_project": len(expected),
        "tasks": len(task_ids),
        "tasks_completed": statuses.get("completed", 0),
        "direct_commits": committed[0],
        "updates": updates,
        "churn": {
            **churned.check(expected),
            "connections": churned.connections,
            "slowest_close_s": round(churned.slowest_close, 3),
        },
        "steady": {**steady.check([i for i in expected if i > first_id]), "connections": steady.connections},
        "global": {**everything.check(everything_expected), "connections": everything.connections},
    }
    failures = []
    for name in ("churn", "steady", "global"):
        for key in ("lost", "doubled", "out_of_order", "unexpected"):
            if checks[name][key]:
                failures.append(f"{name}: {checks[name][key]} {key}")
    if statuses.get("completed", 0) != len(task_ids):
        failures.append(f"tasks not all completed: {statuses}")
    if churned.slowest_close > 3:
        failures.append(f"a close took {churned.slowest_close:.1f} s")
    return checks, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--tasks", type=int, default=8, help="coder tasks per round (a round a second)")
    parser.add_argument("--at-a-time", type=int, default=8)
    parser.add_argument("--writers", type=int, default=6, help="direct writers")
    parser.add_argument("--every", type=int, default=5, help="the churning client drops after this many messages")
    args = parser.parse_args(argv)
    stop_on_signals()
    began = time.monotonic()
    info: dict[str, Any] = {}
    with services_environment(info) as env, tempfile.TemporaryDirectory(prefix="drill-") as logs:
        token = create_admin_token(env) or ""
        api, base_url = start_api(env, Path(logs))
        worker = start_worker(env, Path(logs))
        try:
            checks, failures = asyncio.run(guarded(drill(env, base_url, token, args)))
        finally:
            worker.stop()
            api.stop()
            log_problems(Path(logs))
    return verdict("resume_churn", checks, failures, began)


if __name__ == "__main__":
    sys.exit(main())

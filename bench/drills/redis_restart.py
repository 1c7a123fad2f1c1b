"""Drill: Redis restarts in the middle of a workflow; nothing is lost for a client that resumes.

    .venv/bin/python -m bench.drills.redis_restart

An api and a worker on a PostgreSQL database of their own and a Redis server of the drill's own, on a
free loopback port (never the machine's Redis at 6379: a Redis this process restarts belongs to it,
and dies with the session that ran it, leaving whatever runs next without one). A project
(low oversight) runs the `botarmy-sdlc` workflow and `--tasks` slow coder tasks; a steady client and
a churning client (drops every few messages, resumes with `after`) follow the project's stream.
Once work is under way Redis is restarted, empty (`redis-cli shutdown nosave`, then `redis-server`
again after `--down` seconds, without persistence: queued jobs and pub/sub messages are gone), and
`--tasks` more tasks are submitted while it is down. Checked: the api and the worker come back by
themselves (no restart), the workflow and every task complete, and each client received every event
of the project once, in order. The drill's Redis is stopped whatever happens (errors, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.drills.common import (
    Tally,
    churn_client,
    event_ids,
    guarded,
    log,
    read_up_to,
    steady_client,
    stop_on_signals,
    submit_tasks,
    until,
    verdict,
    wait_for_tasks,
)
from bench.status_bench import create_admin_token, services_environment, start_api, start_worker

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DrillRedis:
    """A Redis server of the drill's own on `port`, without persistence; stopped and started at will."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def start(self) -> None:
        command = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not self.up() and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        """Kill it outright: what was queued or published is gone, as after a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None


@contextlib.contextmanager
def drill_redis() -> Any:
    redis = DrillRedis(free_port())
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()
        log(f"drill redis on port {redis.port} stopped")


async def drill(
    env: dict[str, str], base_url: str, token: str, args: argparse.Namespace, redis: DrillRedis
) -> tuple[dict[str, Any], list[str]]:
    headers = {"Authorization": f"Bearer {token}"}
    ws_base = base_url.replace("http://", "ws://")
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        project = await http.post("/api/v1/projects", json={"name": "redis restart", "oversight_level": "low"})
        project_id = project.json()["id"]
        first_id = (await event_ids(env, project_id))[0]
        url = f"{ws_base}/ws/projects/{project_id}?token={token}"
        steady, churned = Tally("steady"), Tally("churn")
        stop_churn, stop_steady = asyncio.Event(), asyncio.Event()
        churned.ids.append(first_id)  # it resumes after the project's first event, as the steady one
        clients = [
            asyncio.create_task(steady_client(f"{url}&after={first_id}", steady, stop_steady)),
            asyncio.create_task(churn_client(url, churned, stop_churn, every=7)),
        ]
        await asyncio.sleep(0.5)
        started = await http.post(
            "/api/v1/executions",
            json={"project_id": project_id, "workflow_id": "botarmy-sdlc", "inputs": {"idea": "A recipe box"}},
        )
        started.raise_for_status()
        execution_id = started.json()["id"]
        instructions = f"slow [[offline:delay={args.delay}]]"
        task_ids = await submit_tasks(http, project_id, args.tasks, 4, instructions)
        await asyncio.sleep(args.wait)
        status_before = (await http.get(f"/api/v1/executions/{execution_id}")).json()["status"]
        log(f"workflow {execution_id} {status_before}, {args.tasks} slow tasks submitted: restarting Redis")
        down_at = time.monotonic()
        await asyncio.to_thread(redis.stop)
        await until(lambda: not redis.up(), 10)
        log("redis down")
        answers: dict[str, int] = {}
        for n in range(args.tasks):  # through the api while Redis is away: stored, queued once it is back
            try:
                response = await http.post(
                    f"/api/v1/projects/{project_id}/tasks",
                    json={"agent_type": "coder", "instructions": f"{instructions} down #{n}"},
                )
            except httpx.HTTPError as exc:
                answers[type(exc).__name__] = answers.get(type(exc).__name__, 0) + 1
                continue
            answers[str(response.status_code)] = answers.get(str(response.status_code), 0) + 1
            if response.status_code == 201:
                task_ids.append(response.json()["task_id"])
        submitted_down = answers.get("201", 0)
        await asyncio.sleep(max(0.0, args.down - (time.monotonic() - down_at)))
        await asyncio.to_thread(redis.start)
        log(f"redis up again after {time.monotonic() - down_at:.1f} s; {submitted_down} tasks submitted meanwhile")
        deadline = time.monotonic() + args.timeout
        execution: dict[str, Any] = {}
        while time.monotonic() < deadline:
            execution = (await http.get(f"/api/v1/executions/{execution_id}")).json()
            if execution["status"] in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(0.5)
        statuses = await wait_for_tasks(http, task_ids, seconds=max(1.0, deadline - time.monotonic()))
        recovered_after = time.monotonic() - down_at
        log(f"workflow {execution.get('status')}, tasks {statuses}, {recovered_after:.1f} s after Redis went down")
        stop_churn.set()
        await clients[1]
        expected = [i for i in await event_ids(env, project_id) if i > first_id]
        await read_up_to(url, churned, expected[-1])
        await until(lambda: steady.highest >= expected[-1], 60)
        stop_steady.set()
        await clients[0]
    churned.ids.remove(first_id)
    checks = {
        "workflow": execution.get("status"),
        "workflow_status_at_restart": status_before,
        "tasks": statuses,
        "tasks_submitted_while_down": submitted_down,
        "answers_while_down": answers,
        "redis_down_s": args.down,
        "all_done_s_after_redis_down": round(recovered_after, 1),
        "events_in_project": len(expected),
        "steady": {**steady.check(expected), "connections": steady.connections},
        "churn": {**churned.check(expected), "connections": churned.connections},
    }
    failures = []
    if execution.get("status") != "completed":
        failures.append(f"workflow {execution.get('status')}")
    if statuses.get("completed", 0) != len(task_ids):
        failures.append(f"tasks: {statuses}")
    for name in ("steady", "churn"):
        for key in ("lost", "doubled", "out_of_order", "unexpected"):
            if checks[name][key]:
                failures.append(f"{name}: {checks[name][key]} {key}")
    return checks, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=8, help="slow coder tasks before, and again during, the outage")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds each slow task's model call takes")
    parser.add_argument("--wait", type=float, default=1.5, help="seconds of work before Redis goes down")
    parser.add_argument("--down", type=float, default=3.0, help="seconds Redis stays down")
    parser.add_argument("--timeout", type=float, default=180.0, help="for the workflow and tasks to complete")
    args = parser.parse_args(argv)
    stop_on_signals()
    began = time.monotonic()
    info: dict[str, Any] = {}
    with (
        drill_redis() as redis,
        services_environment(info) as shared_env,
        tempfile.TemporaryDirectory(prefix="drill-") as logs,
    ):
        env = {**shared_env, "REDIS_URL": redis.url}
        token = create_admin_token(env) or ""
        api, base_url = start_api(env, Path(logs))
        worker = start_worker(env, Path(logs))
        try:
            checks, failures = asyncio.run(guarded(drill(env, base_url, token, args, redis)))
        finally:
            worker.stop()
            api.stop()
            for name in ("api.log", "worker.log"):
                text = (Path(logs) / name).read_text(errors="replace").splitlines()
                errors = [line for line in text if "Traceback" in line or '"level": "error"' in line]
                log(f"{name}: {len(text)} lines, {len(errors)} error lines")
    return verdict("redis_restart", checks, failures, began)


if __name__ == "__main__":
    sys.exit(main())

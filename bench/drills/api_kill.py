"""Drill: an api process holding many WebSocket clients is killed; they resume on a second api.

    .venv/bin/python -m bench.drills.api_kill --clients 500

Two api processes (`botarmy serve`) and a worker on a PostgreSQL database and a Redis namespace of
their own. `--clients` WebSocket clients connect to the first api, spread over `--projects`
projects (`/ws/projects/{id}`, after the project's first event), and one client on `/ws`. Events are
written all along: project updates through the second api, direct writers (straight to the
database, published through Redis) and coder tasks run by the worker. After `--before` seconds the
first api is killed with SIGKILL; every client reconnects to the second api with
`after=<highest id it saw>`. `--after` seconds later the writing stops, every client reads up to its
stream's last event, and what each received is compared with the event table, summed over all
clients: lost, doubled, out of order. Exits 1 on any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from bench.drills.common import (
    REFUSED,
    Tally,
    direct_writers,
    event_ids,
    guarded,
    log,
    log_problems,
    stop_on_signals,
    submit_tasks,
    until,
    verdict,
    wait_for_tasks,
)
from bench.status_bench import Process, create_admin_token, services_environment, start_api, start_worker


class Client:
    """One WebSocket client that follows its stream across api processes: first, then second."""

    def __init__(self, name: str, path: str, after: int, token: str) -> None:
        self.tally = Tally(name)
        self.path = path
        self.after = after
        self.token = token
        self.reconnected_at: float | None = None

    def url(self, base: str) -> str:
        after = self.tally.highest or self.after
        return f"{base}{self.path}?token={self.token}&after={after}"

    async def follow(self, first: str, second: str, stop: asyncio.Event) -> None:
        base = first
        while not stop.is_set():
            try:
                async with websockets.connect(self.url(base), max_size=None, open_timeout=20) as ws:
                    self.tally.connections += 1
                    if base == second and self.reconnected_at is None:
                        self.reconnected_at = time.monotonic()
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.5):  # not wait_for: on 3.11 it can swallow a cancellation
                                self.tally.add(await ws.recv())
            except (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake, TimeoutError):
                base = second  # the first api is gone: resume on the other one
                await asyncio.sleep(0.05)


async def drill(
    env: dict[str, str], first: Process, first_url: str, second_url: str, token: str, args: argparse.Namespace
) -> tuple[dict[str, Any], list[str]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=second_url, headers=headers, timeout=30) as http:
        projects = [
            (await http.post("/api/v1/projects", json={"name": f"kill {n}"})).json()["id"] for n in range(args.projects)
        ]
        firsts = {project_id: (await event_ids(env, project_id))[0] for project_id in projects}
        start_id = min(firsts.values()) - 1
        clients = [
            Client(f"c{n}", f"/ws/projects/{projects[n % len(projects)]}", firsts[projects[n % len(projects)]], token)
            for n in range(args.clients)
        ]
        everything = Client("global", "/ws", start_id, token)
        stop = asyncio.Event()
        ws_first, ws_second = first_url.replace("http://", "ws://"), second_url.replace("http://", "ws://")
        readers = []
        for batch in range(0, len(clients), 50):  # handshakes 50 at a time
            readers += [asyncio.create_task(c.follow(ws_first, ws_second, stop)) for c in clients[batch : batch + 50]]
            connected = min(batch + 50, len(clients))
            await until(lambda n=connected: sum(c.tally.connections for c in clients) >= n, 30)
        readers.append(asyncio.create_task(everything.follow(ws_first, ws_second, stop)))
        await until(lambda: everything.tally.connections > 0, 30)
        log(f"{args.clients} clients on the first api over {args.projects} projects, and one on /ws")
        task_ids: list[str] = []
        updates = 0
        writing = asyncio.Event()

        async def updates_load() -> None:
            nonlocal updates
            n = 0
            while not writing.is_set():
                project_id = projects[n % len(projects)]
                n += 1
                response = await http.patch(f"/api/v1/projects/{project_id}", json={"description": f"u{n}"})
                if response.status_code == 503:
                    REFUSED["update"] += 1
                    continue
                response.raise_for_status()
                updates += 1

        async def tasks_load() -> None:
            while not writing.is_set():
                task_ids.extend(await submit_tasks(http, projects[0], 8, 8, "kill"))
                await asyncio.sleep(1.0)

        async with direct_writers(env, projects[0], args.writers) as committed:
            load = [asyncio.create_task(updates_load()), asyncio.create_task(tasks_load())]
            await asyncio.sleep(args.before)
            killed_at = time.monotonic()
            os.killpg(first.popen.pid, signal.SIGKILL)  # no shutdown handler runs: the sockets just drop
            first.popen.wait(10)
            log(f"SIGKILLed the first api (pid {first.popen.pid}) with {args.clients + 1} clients on it")
            await until(lambda: all(c.reconnected_at is not None for c in [*clients, everything]), 60)
            reconnected = [c.reconnected_at - killed_at for c in [*clients, everything] if c.reconnected_at]
            log(f"{len(reconnected)} clients reconnected to the second api, the last {max(reconnected):.2f} s after")
            await asyncio.sleep(args.after)
            writing.set()
            await asyncio.gather(*load)
        statuses = await wait_for_tasks(http, task_ids, seconds=120)
        expected = {
            project_id: [i for i in await event_ids(env, project_id) if i > firsts[project_id]]
            for project_id in projects
        }
        everything_expected = await event_ids(env, None, after=start_id)

        def caught_up() -> bool:
            return everything.tally.highest >= everything_expected[-1] and all(
                c.tally.highest >= expected[c.path.rsplit("/", 1)[1]][-1] for c in clients
            )

        await until(caught_up, 60)
        stop.set()
        await asyncio.gather(*readers)
    totals = {"received": 0, "lost": 0, "doubled": 0, "out_of_order": 0, "unexpected": 0}
    for client in clients:
        for key, value in client.tally.check(expected[client.path.rsplit("/", 1)[1]]).items():
            totals[key] += value
    checks = {
        "clients": args.clients,
        "projects": args.projects,
        "clients_reconnected": len(reconnected),
        "reconnect_s": {
            "max": round(max(reconnected), 2),
            "median": round(sorted(reconnected)[len(reconnected) // 2], 2),
        },
        "events_written": len(everything_expected),
        "tasks_completed": f"{statuses.get('completed', 0)}/{len(task_ids)}",
        "direct_commits": committed[0],
        "updates": updates,
        "project_clients_total": totals,
        "global_client": everything.tally.check(everything_expected),
    }
    failures = [f"project clients: {value} {key}" for key, value in totals.items() if key != "received" and value]
    failures += [
        f"global client: {value} {key}" for key, value in checks["global_client"].items() if key != "received" and value
    ]
    if len(reconnected) != args.clients + 1:
        failures.append(f"only {len(reconnected)} of {args.clients + 1} clients reconnected")
    if statuses.get("completed", 0) != len(task_ids):
        failures.append(f"tasks not all completed: {statuses}")
    return checks, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--writers", type=int, default=4, help="direct writers")
    parser.add_argument("--before", type=float, default=5, help="seconds of writing before the kill")
    parser.add_argument("--after", type=float, default=5, help="seconds of writing after the reconnections")
    args = parser.parse_args(argv)
    stop_on_signals()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4 * args.clients + 256), hard), hard))
    began = time.monotonic()
    info: dict[str, Any] = {}
    with services_environment(info) as env, tempfile.TemporaryDirectory(prefix="drill-") as logs:
        token = create_admin_token(env) or ""
        (Path(logs) / "first").mkdir()
        (Path(logs) / "second").mkdir()
        first, first_url = start_api(env, Path(logs) / "first")
        second, second_url = start_api(env, Path(logs) / "second")
        worker = start_worker(env, Path(logs))
        try:
            checks, failures = asyncio.run(guarded(drill(env, first, first_url, second_url, token, args)))
        finally:
            for process in (worker, second, first):
                process.stop()
            log_problems(Path(logs))
    return verdict("api_kill", checks, failures, began)


if __name__ == "__main__":
    sys.exit(main())

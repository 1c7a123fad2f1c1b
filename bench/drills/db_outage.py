"""Drill: PostgreSQL unavailable for 10 s under a workload, without stopping the shared server.

    .venv/bin/python -m bench.drills.db_outage [--outage 10] [--tasks 12]

The api and a worker reach PostgreSQL through a TCP proxy (bench/drills/proxy.py) that the drill
cuts: open connections are dropped and new ones refused, as when the server stops. Checked:
`/health/ready` answers 503 naming the database during the outage; requests answer a clear 503
(JSON, no stack trace) and store nothing; after the outage readiness is back without restarting
anything; every task accepted before, during or after completes exactly once. Exit code 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from tempfile import mkdtemp

import httpx

from bench.drills.proxy import CuttableProxy
from bench.drills.tasks_common import audit, report, say, services, submit, wait_all_done, wait_for_log
from tests.conftest import free_port
from tests.helpers import Server, start_server, start_worker


async def wait_ready(server_url: str, within: float) -> float | None:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() - started < within:
            try:
                if (await client.get(f"{server_url}/health/ready")).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    return None


async def drill(env: dict[str, str], outage: float, tasks: int, logs: Path) -> int:
    proxy = CuttableProxy(target_port=5432, listen_port=free_port())
    await proxy.start()
    database = env["DATABASE_URL"].rsplit("/", 1)[1]
    direct = env
    env = {
        **env,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{proxy.listen_port}/{database}",
        "BOTARMY_DB_CONNECT_TIMEOUT": "2",
    }
    port = free_port()
    # In a thread: start_server blocks, and the proxy runs on this event loop.
    server = await asyncio.to_thread(_start_server, env, port, logs)
    worker = start_worker(env, logs / "worker.log")
    await wait_for_log(worker, "worker_started")
    task_ids: list[str] = []
    problems: list[str] = []
    readiness: list[int] = []
    refused = reads_refused = 0
    recovered: float | None = None
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=15) as client:
            project = (await client.post("/api/v1/projects", json={"name": "db outage"})).json()
            for n in range(tasks // 2):
                task_id = await submit(client, project["id"], f"before {n} [[offline:delay=1]]")
                if task_id is None:
                    problems.append("a task was refused before the outage")
                else:
                    task_ids.append(task_id)
            await asyncio.sleep(1)
            say(f"cutting PostgreSQL off for {outage:g} s (tasks running)")
            await proxy.cut()
            cut_at = time.monotonic()
            while time.monotonic() - cut_at < outage:
                ready = await client.get("/health/ready")
                readiness.append(ready.status_code)
                if ready.status_code == 503 and "database" not in ready.json()["failing"]:
                    problems.append(f"readiness 503 without naming the database: {ready.text}")
                response = await client.post(
                    f"/api/v1/projects/{project['id']}/tasks", json={"agent_type": "coder", "instructions": "during"}
                )
                if response.status_code == 201:
                    task_ids.append(response.json()["task_id"])  # accepted: then it must complete
                elif response.status_code == 503 and "Traceback" not in response.text:
                    refused += 1
                    if not response.json().get("detail") or response.headers.get("Retry-After") is None:
                        problems.append(f"an unclear 503: {response.text}")
                else:
                    problems.append(f"during the outage: {response.status_code} {response.text[:200]}")
                reads_refused += await check_reads(client, project["id"], problems, "during the outage", (200, 503))
                await asyncio.sleep(0.5)
            await proxy.restore()
            say("PostgreSQL reachable again")
            recovered = await wait_ready(server.url, within=30)
            if recovered is None:
                problems.append("readiness did not come back within 30 s")
            await check_reads(client, project["id"], problems, "after the outage", (200,))
            for n in range(tasks - tasks // 2):
                task_id = await submit(client, project["id"], f"after {n} [[offline:delay=0.5]]")
                if task_id is None:
                    problems.append("a task was refused after the outage")
                else:
                    task_ids.append(task_id)
            if not await wait_all_done(client, task_ids, within=120):
                problems.append("not every task finished within 120 s after the outage")
            for name, process in (("api", server), ("worker", worker)):
                if process.popen.poll() is not None:
                    problems.append(f"the {name} exited during the drill")
    finally:
        server.stop()
        worker.stop()
        await proxy.cut()
    result = await audit(direct, task_ids)
    result.problems = problems + result.problems
    not_ready = sum(1 for status in readiness if status == 503)
    if readiness and not_ready < len(readiness) - 2:  # the first probe may find a pooled connection alive
        result.problems.append(f"readiness 503 only {not_ready} of {len(readiness)} times during the outage")
    rows = [
        ("outage (proxy cut: refused + dropped)", f"{outage:g} s"),
        ("readiness probes during: 503 / all", f"{not_ready} / {len(readiness)}"),
        ("task submissions during: clear 503", str(refused)),
        ("reads during (status, project, lists): clear 503", str(reads_refused)),
        ("ready again after the outage", f"{recovered:.2f} s" if recovered is not None else "never"),
        ("processes restarted", "none" if not problems else "see problems"),
    ]
    return report("PostgreSQL outage drill", rows, result)


# The reads that asyncpg runs itself (app.db.driver): a connection lost under them must be answered
# as under any statement (a clear 503), and the pool must serve them again afterwards.
def driver_read_paths(project_id: str) -> list[str]:
    project = f"/api/v1/projects/{project_id}"
    return [f"{project}/status", project, f"{project}/artifacts", f"/api/v1/hitl/project/{project_id}/requests"]


async def check_reads(
    client: httpx.AsyncClient, project_id: str, problems: list[str], when: str, allowed: tuple[int, ...]
) -> int:
    """GET each driver read of the project; the number answered 503 (each a clear one, else a problem)."""
    refused = 0
    paths = driver_read_paths(project_id)
    for path in paths:
        response = await client.get(path)
        if response.status_code not in allowed or "Traceback" in response.text:
            problems.append(f"{when}: GET {path} answered {response.status_code} {response.text[:200]}")
        elif response.status_code == 503:
            refused += 1
            if not response.json().get("detail"):
                problems.append(f"an unclear 503 on GET {path}: {response.text}")
    return refused


def _start_server(env: dict[str, str], port: int, logs: Path) -> Server:
    return start_server(env, port, logs / "api.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--tasks", type=int, default=12)
    args = parser.parse_args()
    logs = Path(mkdtemp(prefix="botarmy-drill-db-"))
    say(f"process logs in {logs}")
    with services("db") as env:
        code = asyncio.run(drill(env, args.outage, args.tasks, logs))
    sys.exit(code)


if __name__ == "__main__":
    main()

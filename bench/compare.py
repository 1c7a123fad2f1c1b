"""BotArmy side by side with the bare limit app (`../shared/bench-ref/`), in one run, with wrk.

    .venv/bin/python -m bench.compare [--duration 10] [--warmup 2] [--rounds 1] [--phases http,embedded,…]
    .venv/bin/python -m bench.compare --botarmy-repo ../wt-before   # BotArmy from another checkout

Phases (issue 17's targets, each a ratio to a baseline measured in the same run):

- `http`: the limit app (its own database `limit_ref_<random>`, uvicorn) and BotArmy in services
  mode (its own database and Redis namespace, one api, one worker, an admin token, the rate limit
  raised but running; a project with 5 completed tasks and one with 200), alternating A B A B:
  for each BotArmy endpoint, the limit's counterpart (status, or /health) and then it, with
  `wrk -t2 -c50 --latency`; req/s, p99, the server's CPU per request. Then task submission: `POST
  …/tasks` at 50 clients (wrk with a Lua script) with the worker stopped.
- `submit`: only the task submission of `http` (no limit app, no set-up tasks, no worker): a quick
  measure of `POST …/tasks` alone.
- `embedded`: BotArmy on a SQLite file: status at 20 clients, and whether a read waits for a
  write lock held by another connection.
- `throughput`: offline coder tasks through the real broker (submitted through the api 10 at a
  time, until all are completed) with 1, 2 and 4 worker processes, and a bare taskiq worker
  (`bench.bare_taskiq`) whose job inserts one ORM row, in the same run.
- `engine`: `bench.engine_bench`'s overhead per workflow step (services, no model delay).

Results are printed with the targets (✓/✗) and written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.status_bench import (
    APP_WORKER_SETTINGS,
    BENCH_ENV,
    CLK_TCK,
    HOST,
    PG_ADMIN_DSN,
    REDIS_URL,
    REPO_ROOT,
    RESULTS_DIR,
    THIS_CHECKOUT,
    BenchError,
    Checkout,
    Process,
    _pg_admin,
    _terminate,
    child_env,
    create_admin_token,
    drop_redis_namespace,
    free_port,
    git_head,
    machine,
    services_environment,
    start_api,
    start_worker,
    wait_for_quiet,
)

LIMIT_DIR = REPO_ROOT.parent / "shared" / "bench-ref"
PHASES = ("http", "submit", "embedded", "throughput", "engine")
SETUP_SECONDS = 180.0  # tasks of the set-up to complete
THROUGHPUT_SECONDS = 120.0  # one throughput measurement
SUBMIT_CLIENTS = 10  # tasks submitted this many at a time in the throughput phase

# The targets: (what is compared, the bound, "min" if the figure must reach it, "max" if not exceed it).
TARGETS: dict[str, tuple[float, str]] = {
    "rps_ratio": (0.5, "min"),
    "p99_ratio": (2.0, "max"),
    "cpu_ratio": (2.0, "max"),
    "health_rps_ratio": (0.8, "min"),
    "status200_cost_ratio": (3.0, "max"),
    "submissions_per_s": (500.0, "min"),
    "tasks_ratio_1_worker": (0.25, "min"),
    "engine_step_p50_ms": (10.0, "max"),
    "embedded_status20_p99_ms": (100.0, "max"),
}


@dataclass(frozen=True)
class Load:
    connections: int
    duration: float
    warmup: float


# --- wrk -------------------------------------------------------------------------------------------------


def process_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNIT_MS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    requests = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    if requests is None:
        raise BenchError(f"wrk said nothing measurable:\n{output}")
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests": int(requests.group(1)),
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]) if "50" in latency else None,
        "p99_ms": _ms(latency["99"]) if "99" in latency else None,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
    }


def wrk(url: str, server_pid: int, load: Load, headers: dict[str, str], script: Path | None = None) -> dict[str, Any]:
    """Warm-up, then the measured run; the server's CPU ticks over the measured run."""
    args = ["wrk", "-t2", f"-c{load.connections}", "--timeout", "10s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    if script is not None:
        args += ["-s", str(script)]
    if load.warmup > 0:
        subprocess.run([*args, f"-d{load.warmup:g}s", url], capture_output=True, check=True, timeout=load.warmup + 60)
    busy_before = asyncio.run(wait_for_quiet(3.0))
    ticks = process_ticks(server_pid)
    done = subprocess.run(
        [*args, f"-d{load.duration:g}s", "--latency", url], capture_output=True, text=True, timeout=load.duration + 60
    )
    ticks = process_ticks(server_pid) - ticks
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr}")
    result = parse_wrk(done.stdout)
    if result["p99_ms"] is None:
        result["wrk_output"] = done.stdout
    ok = result["requests"] - result["non_2xx"]
    result["cpu_ms_per_request"] = round(ticks / CLK_TCK * 1000 / max(1, ok), 3)
    result["machine_busy_before_percent"] = busy_before
    return result


# The task every load generator POSTs (wrk in the submission phase, ab in the throughput phase).
TASK_BODY = '{"agent_type": "coder", "instructions": "compare bench: write a function"}'
POST_TASK_SCRIPT = f"""wrk.method = "POST"
wrk.body = '{TASK_BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


# --- the limit app ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def limit_app(log_dir: Path, info: dict[str, Any]) -> Iterator[tuple[Process, str, str]]:
    """The bare limit app on a database of its own: (process, base URL, its project id)."""
    import asyncpg

    db_name = f"limit_ref_{uuid.uuid4().hex[:10]}"
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{db_name}"
    info["limit_database"] = db_name

    async def load_schema() -> str:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            await connection.execute((LIMIT_DIR / "limit_schema.sql").read_text())
            return str(await connection.fetchval("SELECT DISTINCT project_id FROM base_tasks"))
        finally:
            await connection.close()

    process = None
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{db_name}"'))
        project_id = asyncio.run(load_schema())
        port = free_port()
        args = [sys.executable, "-m", "uvicorn", "limit_app:app", "--host", HOST, "--port", str(port)]
        args += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
        env = {**child_env({}), "BASE_DSN": dsn}
        process = Process("limit", args, env, log_dir / "limit.log", cwd=LIMIT_DIR)
        base_url = f"http://{HOST}:{port}"
        wait_healthy(process, base_url)
        yield process, base_url, project_id
    finally:
        if process is not None:
            process.stop()
        try:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        except Exception as exc:
            print(f"  WARNING: could not drop database {db_name}: {exc!r}", file=sys.stderr)


def wait_healthy(process: Process, base_url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise BenchError(f"{process.name} exited early:\n{process.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"{process.name} not healthy within {seconds:.0f} s:\n{process.log_tail()}")


# --- BotArmy set-up ----------------------------------------------------------------------------------------


async def submit_tasks(
    base_url: str, headers: dict[str, str], project_id: str, count: int, clients: int = SUBMIT_CLIENTS
) -> float:
    """`count` coder tasks through the api, `clients` at a time; the seconds it took."""
    numbers = iter(range(count))
    started = time.perf_counter()

    async def submit(client: httpx.AsyncClient) -> None:
        for number in numbers:
            body = {"agent_type": "coder", "instructions": f"compare bench task {number}: write a function"}
            response = await client.post(f"/api/v1/projects/{project_id}/tasks", json=body)
            if response.status_code != 201:
                raise BenchError(f"create task: {response.status_code} {response.text}")

    limits = httpx.Limits(max_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        pool = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30, limits=limits)
            )
            for _ in range(clients)
        ]
        await asyncio.gather(*(submit(client) for client in pool))
    return time.perf_counter() - started


async def new_project(client: httpx.AsyncClient, name: str) -> str:
    response = await client.post("/api/v1/projects/", json={"name": name, "description": "compare bench"})
    if response.status_code != 201:
        raise BenchError(f"create project: {response.status_code} {response.text}")
    return str(response.json()["id"])


async def wait_completed(client: httpx.AsyncClient, project_id: str, count: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    statuses: list[str] = []
    while time.monotonic() < deadline:
        statuses = [
            row["status"] for row in (await client.get(f"/api/v1/projects/{project_id}/status")).json()["tasks"]
        ]
        if len(statuses) == count and all(s == "completed" for s in statuses):
            return
        if any(s in {"failed", "cancelled"} for s in statuses):
            raise BenchError(f"a task did not complete: {sorted(set(statuses))}")
        await asyncio.sleep(0.3)
    raise BenchError(f"{count} tasks not completed within {seconds:.0f} s: {len(statuses)} seen")


async def botarmy_paths(base_url: str, headers: dict[str, str], small: int, large: int) -> dict[str, str]:
    """Projects of `small` and `large` completed tasks; the path of each endpoint measured."""
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        five = await new_project(client, "compare: small")
        many = await new_project(client, "compare: large")
        await submit_tasks(base_url, headers, five, small)
        await submit_tasks(base_url, headers, many, large)
        await wait_completed(client, five, small, SETUP_SECONDS)
        await wait_completed(client, many, large, SETUP_SECONDS)
        task_id = (await client.get(f"/api/v1/projects/{five}/status")).json()["tasks"][0]["task_id"]
        paths = {
            "status": f"/api/v1/projects/{five}/status",
            "status_200": f"/api/v1/projects/{many}/status",
            "project": f"/api/v1/projects/{five}",
            "task": f"/api/v1/tasks/{task_id}",
            "artifacts": f"/api/v1/projects/{five}/artifacts",
            "hitl": f"/api/v1/hitl/project/{five}/requests",
            "health": "/health",
            "submit_project": await new_project(client, "compare: submissions"),
        }
        for name, path in paths.items():
            if path.startswith("/"):
                response = await client.get(path)
                if response.status_code != 200:
                    raise BenchError(f"{name}: GET {path} answered {response.status_code} {response.text[:200]}")
        return paths


# --- phases ----------------------------------------------------------------------------------------------

ENDPOINTS = ("status", "status_200", "project", "task", "artifacts", "hitl", "health")


def http_phase(checkout: Checkout, load: Load, rounds: int, log_dir: Path, info: dict[str, Any]) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {f"botarmy.{name}": [] for name in ENDPOINTS}
    runs |= {"limit.status": [], "limit.health": []}
    with contextlib.ExitStack() as stack:
        limit, limit_url, limit_project = stack.enter_context(limit_app(log_dir, info))
        env = stack.enter_context(services_environment(info))
        processes: list[Process] = []
        stack.callback(lambda: [process.stop() for process in reversed(processes)])
        worker = start_worker(env, log_dir, checkout)
        processes.append(worker)
        token = create_admin_token(env, checkout)
        api, base_url = start_api(env, log_dir, checkout)
        processes.append(api)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        print("  set-up: projects of 5 and 200 completed tasks …", flush=True)
        paths = asyncio.run(botarmy_paths(base_url, headers, 5, 200))
        limit_paths = {"status": f"/api/v1/projects/{limit_project}/status", "health": "/health"}
        for round_number in range(rounds):
            for name in ENDPOINTS:
                counterpart = "health" if name == "health" else "status"
                print(f"  round {round_number + 1}: limit {counterpart}, BotArmy {name} …", flush=True)
                runs[f"limit.{counterpart}"].append(
                    wrk(limit_url + limit_paths[counterpart], limit.popen.pid, load, {})
                )
                runs[f"botarmy.{name}"].append(wrk(base_url + paths[name], api.popen.pid, load, headers))
        print("  task submission (worker stopped) …", flush=True)
        worker.stop()
        submit_url = f"{base_url}/api/v1/projects/{paths['submit_project']}/tasks"
        submissions = measure_submissions(submit_url, api.popen.pid, load, headers, rounds)
    return {"runs": runs, "submissions": submissions}


def measure_submissions(
    url: str, server_pid: int, load: Load, headers: dict[str, str], rounds: int
) -> list[dict[str, Any]]:
    """`POST …/tasks` with wrk at the load's clients, `rounds` times."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(POST_TASK_SCRIPT)
    try:
        return [wrk(url, server_pid, load, headers, Path(script.name)) for _ in range(rounds)]
    finally:
        Path(script.name).unlink()


def submit_phase(checkout: Checkout, load: Load, rounds: int, log_dir: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Only the submission measure of the http phase: services mode, one api, no worker."""

    async def project(base_url: str, headers: dict[str, str]) -> str:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
            return await new_project(client, "compare: submissions")

    with contextlib.ExitStack() as stack:
        env = stack.enter_context(services_environment(info))
        token = create_admin_token(env, checkout)
        api, base_url = start_api(env, log_dir, checkout)
        stack.callback(api.stop)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        submit_url = f"{base_url}/api/v1/projects/{asyncio.run(project(base_url, headers))}/tasks"
        print(f"  task submission (no worker), api pid {api.popen.pid} …", flush=True)
        return {"submissions": measure_submissions(submit_url, api.popen.pid, load, headers, rounds)}


def sqlite_path(env: dict[str, str]) -> Path:
    from app.config import load_settings

    return Path(load_settings(env).db.url.split(":///", 1)[1])


def embedded_phase(checkout: Checkout, load: Load, log_dir: Path) -> dict[str, Any]:
    env = {**BENCH_ENV, "BOTARMY_DATA_DIR": str(log_dir / "data")}
    processes: list[Process] = []
    try:
        token = create_admin_token(env, checkout)
        api, base_url = start_api(env, log_dir, checkout)
        processes.append(api)
        headers = {"Authorization": f"Bearer {token}"} if token else {}

        async def set_up() -> str:
            async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
                project_id = await new_project(client, "compare: embedded")
                await submit_tasks(base_url, headers, project_id, 5)
                await wait_completed(client, project_id, 5, SETUP_SECONDS)
                return project_id

        project_id = asyncio.run(set_up())
        url = f"{base_url}/api/v1/projects/{project_id}/status"
        status = wrk(url, api.popen.pid, Load(20, load.duration, load.warmup), headers)
        waited = read_under_write_lock(sqlite_path(env), url, headers)
        return {"status_20": status, "read_under_write_lock_s": waited, "read_waits_for_write_lock": waited > 1.0}
    finally:
        for process in processes:
            process.stop()


def read_under_write_lock(database: Path, url: str, headers: dict[str, str], hold: float = 3.0) -> float:
    """Another connection holds SQLite's write lock for `hold` s; how long a status read takes meanwhile."""
    locked = threading.Event()

    def hold_lock() -> None:
        connection = sqlite3.connect(database, isolation_level=None, timeout=30)
        try:
            connection.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(hold)
            connection.execute("ROLLBACK")
        finally:
            connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        if not locked.wait(30):
            raise BenchError("could not take the SQLite write lock")
        started = time.perf_counter()
        response = httpx.get(url, headers=headers, timeout=hold + 30)
        waited = time.perf_counter() - started
        if response.status_code != 200:
            raise BenchError(f"status under the write lock: {response.status_code}")
        return round(waited, 3)
    finally:
        holder.join()


async def count_rows(dsn: str, query: str, *args: Any) -> int:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await connection.fetchval(query, *args))
    finally:
        await connection.close()


async def wait_for_count(dsn: str, query: str, args: tuple[Any, ...], count: int, seconds: float) -> float:
    """Poll until `query` counts `count`; the monotonic time it did (one connection, every 20 ms)."""
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        deadline = time.monotonic() + seconds
        seen = 0
        while time.monotonic() < deadline:
            seen = int(await connection.fetchval(query, *args))
            if seen >= count:
                return time.perf_counter()
            await asyncio.sleep(0.02)
    finally:
        await connection.close()
    raise BenchError(f"{count} not reached within {seconds:.0f} s: {seen}")


COMPLETED = "SELECT count(*) FROM agent_task WHERE project_id = $1 AND status = 'completed'"


async def statuses_of(dsn: str) -> dict[str, int]:
    """The statuses of every task of the throughput database (what did not complete, if any)."""
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await connection.fetch("SELECT status, count(*) FROM agent_task GROUP BY status")
        return {str(row[0]): int(row[1]) for row in rows}
    finally:
        await connection.close()


def submit_with_ab(url: str, headers: dict[str, str], count: int, clients: int = SUBMIT_CLIENTS) -> float:
    """`count` coder tasks POSTed by ApacheBench, `clients` at a time on kept-alive connections; the
    seconds it took. A load generator in C: httpx spent 3-4 ms of CPU per task on the same two cores
    as the api and the worker, where the bare worker's jobs are sent by taskiq in this process."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as body:
        body.write(TASK_BODY)
        body.flush()
        args = ["ab", "-q", "-k", "-n", str(count), "-c", str(clients), "-p", body.name, "-T", "application/json"]
        for name, value in headers.items():
            args += ["-H", f"{name}: {value}"]
        started = time.perf_counter()
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=THROUGHPUT_SECONDS)
        elapsed = time.perf_counter() - started
    complete = re.search(r"Complete requests:\s+(\d+)", done.stdout)
    non_2xx = re.search(r"Non-2xx responses:\s+(\d+)", done.stdout)
    if done.returncode != 0 or complete is None or int(complete.group(1)) != count or non_2xx is not None:
        raise BenchError(f"ab failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


def botarmy_throughput(
    checkout: Checkout,
    env: dict[str, str],
    base_url: str,
    headers: dict[str, str],
    tasks: int,
    log_dir: Path,
    submit_client: str = "httpx",
) -> dict[str, Any]:
    dsn = env["DATABASE_URL"]

    async def measure() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
            warm = await new_project(client, "throughput warm-up")
            await submit_tasks(base_url, headers, warm, SUBMIT_CLIENTS)
            await wait_completed(client, warm, SUBMIT_CLIENTS, SETUP_SECONDS)
            project_id = await new_project(client, "throughput")
        await wait_for_quiet(3.0)
        started = time.perf_counter()
        waiting = asyncio.create_task(
            wait_for_count(dsn, COMPLETED, (uuid.UUID(project_id),), tasks, THROUGHPUT_SECONDS)
        )
        url = f"{base_url}/api/v1/projects/{project_id}/tasks"
        if submit_client == "ab":
            submit_s = await asyncio.to_thread(submit_with_ab, url, headers, tasks)
        else:
            submit_s = await submit_tasks(base_url, headers, project_id, tasks)
        elapsed = await waiting - started
        return {
            "tasks": tasks,
            "submit_s": round(submit_s, 3),
            "accepted_per_s": round(tasks / submit_s, 1),
            "all_completed_s": round(elapsed, 3),
            "tasks_per_s": round(tasks / elapsed, 1),
            "submit_client": submit_client,
        }

    results: dict[str, Any] = {}
    for processes in (1, 2, 4):
        print(f"  BotArmy worker, {processes} process(es), {tasks} tasks …", flush=True)
        worker = start_worker(env, log_dir, checkout, processes)
        try:
            results[str(processes)] = asyncio.run(measure())
        except BenchError as exc:  # said in the report; the other scales are still measured
            print(f"  !! {exc}", flush=True)
            results[str(processes)] = {"tasks": tasks, "error": str(exc)}
        finally:
            worker.stop()
        results[str(processes)]["statuses"] = asyncio.run(statuses_of(dsn))
    return results


def bare_throughput(env: dict[str, str], tasks: int, log_dir: Path) -> dict[str, Any]:
    """The bare taskiq worker, one process, --max-async-tasks 10; `tasks` jobs sent 10 at a time."""
    from sqlalchemy.ext.asyncio import create_async_engine

    namespace = f"{env['BOTARMY_REDIS_NAMESPACE']}-bare"
    os.environ["BARE_NAMESPACE"] = namespace  # the broker's queue, read when the module is imported
    from bench import bare_taskiq

    bare_env = {**child_env({}), "DATABASE_URL": env["DATABASE_URL"], "REDIS_URL": REDIS_URL}
    bare_env["BARE_NAMESPACE"] = namespace
    dsn = env["DATABASE_URL"]

    async def create_table() -> None:
        engine = create_async_engine(bare_taskiq.async_url(dsn))
        async with engine.begin() as connection:
            await connection.run_sync(bare_taskiq.Base.metadata.create_all)
        await engine.dispose()

    async def send(count: int, prefix: str) -> float:
        broker = bare_taskiq.broker
        await broker.startup()
        try:
            numbers = iter(range(count))
            started = time.perf_counter()

            async def sender() -> None:
                for number in numbers:
                    await bare_taskiq.insert_row.kiq(f"{prefix} {number}")

            await asyncio.gather(*(sender() for _ in range(SUBMIT_CLIENTS)))
            return time.perf_counter() - started
        finally:
            await broker.shutdown()

    async def measure() -> dict[str, Any]:
        query = "SELECT count(*) FROM bench_bare_row WHERE payload LIKE $1"
        run = uuid.uuid4().hex[:8]  # this measurement's rows, apart from an earlier one's
        await send(SUBMIT_CLIENTS, f"warm-{run}")
        await wait_for_count(dsn, query, (f"warm-{run} %",), SUBMIT_CLIENTS, SETUP_SECONDS)
        await wait_for_quiet(3.0)
        started = time.perf_counter()
        waiting = asyncio.create_task(wait_for_count(dsn, query, (f"run-{run} %",), tasks, THROUGHPUT_SECONDS))
        submit_s = await send(tasks, f"run-{run}")
        elapsed = await waiting - started
        return {
            "tasks": tasks,
            "submit_s": round(submit_s, 3),
            "all_completed_s": round(elapsed, 3),
            "tasks_per_s": round(tasks / elapsed, 1),
        }

    asyncio.run(create_table())
    args = [sys.executable, "-m", "taskiq", "worker", "bench.bare_taskiq:broker", "--max-async-tasks", "10"]
    args += ["--workers", "1"]
    worker = Process("bare-worker", args, bare_env, log_dir / "bare-worker.log")
    try:
        print(f"  bare taskiq worker, 1 process, {tasks} tasks …", flush=True)
        return asyncio.run(measure())
    finally:
        worker.stop()
        drop_redis_namespace(namespace)


def throughput_phase(
    checkout: Checkout, tasks: int, log_dir: Path, info: dict[str, Any], submit_client: str = "httpx"
) -> dict[str, Any]:
    throughput_info: dict[str, Any] = {}
    with services_environment(throughput_info) as services_env:
        env = {**services_env, **APP_WORKER_SETTINGS}  # the worker sweeps as deployed, not as in the tests
        token = create_admin_token(env, checkout)
        api, base_url = start_api(env, log_dir, checkout)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            # Alternating: bare, BotArmy (1, 2, 4 processes), bare again.
            bare = [bare_throughput(env, tasks, log_dir)]
            botarmy = botarmy_throughput(checkout, env, base_url, headers, tasks, log_dir, submit_client)
            bare.append(bare_throughput(env, tasks, log_dir))
        finally:
            api.stop()
    info["throughput_database"] = throughput_info.get("database")
    return {"bare": bare, "botarmy": botarmy}


def engine_phase(checkout: Checkout, executions: int) -> dict[str, Any]:
    """bench.engine_bench of the checkout (services, overhead only); its per-step figures."""
    args = [checkout.python, "-m", "bench.engine_bench", "--mode", "services", "--sequential", str(executions)]
    args += ["--warmup", "1", "--concurrency", "", "--idle-wait", "3"]
    done = subprocess.run(args, cwd=checkout.root, capture_output=True, text=True, timeout=900)
    written = re.search(r"results written to (\S+)", done.stdout)
    if done.returncode != 0 or written is None:
        raise BenchError(f"engine_bench failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    report = json.loads((checkout.root / written.group(1)).read_text())
    overhead = report["results"]["services"]["overhead"]
    return {
        "report": str(checkout.root / written.group(1)),
        "measured_executions": overhead["measured"],
        "engine_per_step": overhead["engine_per_step"],
        "engine_per_task": overhead["engine_per_task"],
    }


# --- summary ----------------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def med(runs: list[dict[str, Any]], key: str) -> float:
    return median([run[key] for run in runs if run.get(key) is not None])


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure with a target: name, value, baseline, ratio, target, met."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float, baseline: float | None, target: str, unit: str = "") -> None:
        bound, kind = TARGETS[target]
        figure = value / baseline if baseline else value
        met = figure >= bound if kind == "min" else figure <= bound
        rows.append(
            {
                "name": name,
                "value": round(value, 3),
                "baseline": round(baseline, 3) if baseline else None,
                "figure": round(figure, 3),
                "target": f"{'≥' if kind == 'min' else '≤'} {bound:g}{unit}",
                "met": met,
            }
        )

    http = results.get("http")
    if http:
        runs = http["runs"]
        limit_status, limit_health = runs["limit.status"], runs["limit.health"]
        for name in ENDPOINTS:
            mine = runs[f"botarmy.{name}"]
            base = limit_health if name == "health" else limit_status
            if name == "health":
                add("/health req/s", med(mine, "requests_per_s"), med(base, "requests_per_s"), "health_rps_ratio")
                continue
            if name == "status_200":
                base_cost = med(runs["botarmy.status"], "cpu_ms_per_request")
                add(
                    "status 200 tasks: CPU/req vs status 5",
                    med(mine, "cpu_ms_per_request"),
                    base_cost,
                    "status200_cost_ratio",
                )
                continue
            add(f"{name}: req/s", med(mine, "requests_per_s"), med(base, "requests_per_s"), "rps_ratio")
            add(f"{name}: p99 ms", med(mine, "p99_ms"), med(base, "p99_ms"), "p99_ratio")
            add(f"{name}: CPU ms/req", med(mine, "cpu_ms_per_request"), med(base, "cpu_ms_per_request"), "cpu_ratio")
    for phase in ("http", "submit"):
        if phase in results:
            accepted = [
                run["requests_per_s"] * (1 - run["non_2xx"] / max(1, run["requests"]))
                for run in results[phase]["submissions"]
            ]
            add("task submission, accepted/s", median(accepted), None, "submissions_per_s", "/s")
    embedded = results.get("embedded")
    if embedded:
        add("embedded status@20 p99 ms", embedded["status_20"]["p99_ms"], None, "embedded_status20_p99_ms", " ms")
    throughput = results.get("throughput")
    if throughput:
        bare = median([run["tasks_per_s"] for run in throughput["bare"]])
        one = throughput["botarmy"]["1"].get("tasks_per_s", 0.0)
        add("offline tasks/s, 1 worker process", one, bare, "tasks_ratio_1_worker")
    engine = results.get("engine")
    if engine:
        add("engine overhead per step p50 ms", engine["engine_per_step"]["p50_ms"], None, "engine_step_p50_ms", " ms")
    return rows


def print_report(results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    http = results.get("http")
    if http:
        print()
        print(f"{'wrk -t2 -c50':<30}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}{'non-2xx':>9}")
        for name, runs in http["runs"].items():
            if runs:
                print(
                    f"{name:<30}{med(runs, 'requests_per_s'):>9.0f}{med(runs, 'p50_ms'):>9.1f}"
                    f"{med(runs, 'p99_ms'):>9.1f}{med(runs, 'cpu_ms_per_request'):>12.3f}"
                    f"{sum(run['non_2xx'] + run['socket_errors'] for run in runs):>9}"
                )
    for phase in ("http", "submit"):
        if phase not in results:
            continue
        if phase == "submit":
            print()
            print(f"{'wrk -t2 -c50':<30}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}{'non-2xx':>9}")
        runs = results[phase]["submissions"]
        print(
            f"{'botarmy.POST tasks':<30}{med(runs, 'requests_per_s'):>9.0f}{med(runs, 'p50_ms'):>9.1f}"
            f"{med(runs, 'p99_ms'):>9.1f}{med(runs, 'cpu_ms_per_request'):>12.3f}"
            f"{sum(run['non_2xx'] + run['socket_errors'] for run in runs):>9}"
        )
    embedded = results.get("embedded")
    if embedded:
        s = embedded["status_20"]
        print(
            f"\nembedded status, 20 clients: {s['requests_per_s']:.0f} req/s, p99 {s['p99_ms']:.1f} ms, "
            f"{s['cpu_ms_per_request']:.3f} ms CPU/req; a read while another connection holds the write lock "
            f"took {embedded['read_under_write_lock_s']:.2f} s "
            f"({'waits for it' if embedded['read_waits_for_write_lock'] else 'does not wait'})"
        )
    throughput = results.get("throughput")
    if throughput:
        bare = ", ".join(f"{run['tasks_per_s']:.0f}" for run in throughput["bare"])
        mine = ", ".join(
            f"{n} process(es) {run['tasks_per_s']:.1f}" if "tasks_per_s" in run else f"{n} process(es) failed"
            for n, run in throughput["botarmy"].items()
        )
        clients = {run.get("submit_client", "httpx") for run in throughput["botarmy"].values()}
        print(f"\noffline tasks/s: bare taskiq worker {bare}; BotArmy {mine} (POSTed by {', '.join(sorted(clients))})")
    engine = results.get("engine")
    if engine:
        step = engine["engine_per_step"]
        print(f"\nengine overhead per step: p50 {step['p50_ms']:.1f} ms, p90 {step.get('p90_ms', float('nan')):.1f} ms")
    print()
    print(f"{'target (issue 17)':<42}{'BotArmy':>10}{'limit':>10}{'ratio':>8}  {'target':<10}")
    for row in rows:
        baseline = f"{row['baseline']:>10g}" if row["baseline"] else f"{'':>10}"
        ratio = f"{row['figure']:>8.2f}" if row["baseline"] else f"{'':>8}"
        print(
            f"{row['name']:<42}{row['value']:>10g}{baseline}{ratio}  {row['target']:<10} {'✓' if row['met'] else '✗'}"
        )
    print()


# --- main -------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per wrk run (1..120)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured wrk seconds before each (0..30)")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of every http measurement (1..5)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per throughput measurement (10..5000)")
    parser.add_argument("--engine-executions", type=int, default=5, help="engine_bench executions (1..50)")
    parser.add_argument(
        "--submit-client",
        choices=("ab", "httpx"),
        default=None,
        help="what POSTs the throughput phase's tasks (default: ab, ApacheBench, where installed; else httpx)",
    )
    parser.add_argument(
        "--botarmy-repo",
        type=Path,
        default=None,
        help="run BotArmy from this checkout (its .venv) instead of this one, e.g. the code before a change",
    )
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not phases or any(p not in PHASES for p in phases):
        parser.error(f"--phases: some of {', '.join(PHASES)}")
    if not 1 <= args.duration <= 120 or not 0 <= args.warmup <= 30 or not 1 <= args.rounds <= 5:
        parser.error("--duration 1..120, --warmup 0..30, --rounds 1..5")
    if not 10 <= args.tasks <= 5000 or not 1 <= args.engine_executions <= 50:
        parser.error("--tasks 10..5000, --engine-executions 1..50")
    args.phases = phases
    if args.submit_client is None:
        args.submit_client = "ab" if shutil.which("ab") else "httpx"
    elif args.submit_client == "ab" and not shutil.which("ab"):
        parser.error("--submit-client ab: ApacheBench is not installed (apt-get install apache2-utils)")
    return args


def checkout_of(path: Path | None) -> Checkout:
    if path is None:
        return THIS_CHECKOUT
    root = path.resolve()
    python = root / ".venv" / "bin" / "python"
    if not (root / "app").is_dir() or not python.exists():
        raise SystemExit(f"--botarmy-repo {path}: not a BotArmy checkout with a .venv")
    return Checkout(root, str(python))


def git_head_of(root: Path) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    done = subprocess.run([git, "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkout = checkout_of(args.botarmy_repo)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.datetime.now(datetime.UTC)
    load = Load(50, args.duration, args.warmup)
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    info: dict[str, Any] = {"botarmy_checkout": str(checkout.root), "botarmy_head": git_head_of(checkout.root)}
    if "http" in args.phases and not (LIMIT_DIR / "limit_app.py").exists():
        print(f"!! {LIMIT_DIR} has no limit_app.py: the http phase is skipped", file=sys.stderr)
        args.phases.remove("http")
        failures["http"] = f"skipped: {LIMIT_DIR} absent"
    phases: dict[str, Callable[[Path], Any]] = {
        "http": lambda log_dir: http_phase(checkout, load, args.rounds, log_dir, info),
        "submit": lambda log_dir: submit_phase(checkout, load, args.rounds, log_dir, info),
        "embedded": lambda log_dir: embedded_phase(checkout, load, log_dir),
        "throughput": lambda log_dir: throughput_phase(checkout, args.tasks, log_dir, info, args.submit_client),
        "engine": lambda _: engine_phase(checkout, args.engine_executions),
    }
    for phase in args.phases:
        print(f"== {phase}", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"botarmy-compare-{phase}-") as workdir:
            try:
                results[phase] = phases[phase](Path(workdir))
            except Exception as exc:
                failures[phase] = str(exc) or repr(exc)
                print(f"!! {phase} failed: {exc}", file=sys.stderr)
                for log in sorted(Path(workdir).glob("*.log")):
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                    print(f"--- {log.name} (tail)\n{tail}", file=sys.stderr)
    rows = summarize(results)
    print_report(results, rows)
    report = {
        "benchmark": "compare",
        "started_at": started.isoformat(),
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "machine": machine(),
        "git_head": git_head(),
        "info": info,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "env": BENCH_ENV,
        "results": results,
        "targets": rows,
        "failures": failures,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"compare-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results written to {path.relative_to(REPO_ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

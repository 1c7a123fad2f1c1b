"""Benchmark of the project status endpoint and of event delivery over WebSocket, against a real server.

    .venv/bin/python -m bench.status_bench --mode embedded|services|both

Each mode starts `python -m app serve` as a subprocess on a free 127.0.0.1 port (and, in services
mode, one `python -m app worker --workers 1`), makes a project with some completed tasks, then:

1. status: `GET /api/v1/projects/{id}/status` from N concurrent httpx clients for a fixed time;
   requests/s and latency percentiles.
2. events: one `PATCH /api/v1/projects/{id}` at a time, each writing a `project_updated` event, and
   the time until a WebSocket client subscribed to `/ws/projects/{id}` receives it.

Services mode makes its own PostgreSQL database and Redis namespace and removes both at the end,
whatever happened. Results are printed and written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
HOST = "127.0.0.1"  # every byte of this benchmark stays on the loopback interface
PG_ADMIN_DSN = f"postgresql://postgres@{HOST}:5432/postgres"
REDIS_URL = f"redis://{HOST}:6379/0"

# As tests/conftest.py FAST_ENV: quick sweeps; tasks run on the offline provider.
FAST_ENV = {
    "BOTARMY_LOG_LEVEL": "WARNING",
    "BOTARMY_SWEEP_INTERVAL_SECONDS": "0.5",
    "BOTARMY_TASK_LEASE_SECONDS": "3",
    "BOTARMY_PENDING_REQUEUE_SECONDS": "1",
}
# The per-token rate limit (default 1200/min) would cap the load phase at 20 requests/s: raised
# out of the way. The rate-limit middleware still runs on every request (with Redis in services mode).
BENCH_ENV = {
    **FAST_ENV,
    "BOTARMY_RATE_LIMIT_PER_MINUTE": "1000000",
    # ws_bench opens thousands of sockets with one token.
    "BOTARMY_WS_MAX_CONNECTIONS_PER_TOKEN": "1000000",
    "BOTARMY_WS_MAX_CONNECTIONS": "1000000",
}

# The app's own lease and sweep settings, for the benchmarks of work (engine_bench, compare's throughput):
# FAST_ENV's 3 s lease is for tests, and its 0.5 s sweep adds load of its own (5 % of a busy worker's CPU).
APP_WORKER_SETTINGS = {
    "BOTARMY_TASK_LEASE_SECONDS": "15",
    "BOTARMY_SWEEP_INTERVAL_SECONDS": "5",
    "BOTARMY_PENDING_REQUEUE_SECONDS": "10",
}

SERVER_START_SECONDS = 60.0
TASKS_DONE_SECONDS = 120.0
REQUEST_TIMEOUT_SECONDS = 10.0
EVENT_TIMEOUT_SECONDS = 10.0
EVENTS_PHASE_SECONDS = 300.0
WARMUP_SECONDS = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Target:
    """The served app under test."""

    base_url: str
    headers: dict[str, str]
    groups: dict[str, int]  # name -> process group id of our subprocesses, for CpuMeter

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=REQUEST_TIMEOUT_SECONDS, **kwargs
        )


@dataclass(frozen=True)
class Config:
    concurrency: tuple[int, ...]
    duration: float
    max_requests: int
    tasks: int
    events: int
    warmup_events: int
    idle_wait: float


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class Checkout:
    """A BotArmy source tree and the Python of its venv: the code that the subprocesses run."""

    root: Path
    python: str


# This tree, run by this interpreter; bench.compare can point at another (the code before a change).
THIS_CHECKOUT = Checkout(REPO_ROOT, sys.executable)


# --- processes -------------------------------------------------------------------------------------------


class Process:
    """A child in its own process group, so that stopping it reaches its children (taskiq's workers) too."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO_ROOT) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._log.close()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any BotArmy setting of the caller's, plus the mode's own."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BOTARMY_") and key not in {"DATABASE_URL", "REDIS_URL"}
    }
    return {**base, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_api(env: dict[str, str], log_dir: Path, checkout: Checkout = THIS_CHECKOUT) -> tuple[Process, str]:
    port = free_port()
    args = [checkout.python, "-m", "app", "serve", "--host", HOST, "--port", str(port)]
    api = Process("api", args, child_env(env), log_dir / "api.log", cwd=checkout.root)
    base_url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if api.popen.poll() is not None:
            api.stop()
            raise BenchError(f"the api exited early:\n{api.log_tail()}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return api, base_url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    api.stop()
    raise BenchError(f"the api did not become healthy within {SERVER_START_SECONDS:.0f} s:\n{api.log_tail()}")


def create_admin_token(env: dict[str, str], checkout: Checkout = THIS_CHECKOUT) -> str | None:
    """An admin token made with `botarmy token create`; None for a build without authentication."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    args = [checkout.python, "-m", "app", "token", "create", "--name", name, "--role", "admin"]
    done = subprocess.run(args, cwd=checkout.root, env=child_env(env), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        if "No such command" in done.stderr:
            return None
        raise BenchError(f"token create failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout.strip().splitlines()[-1].strip()


def start_worker(env: dict[str, str], log_dir: Path, checkout: Checkout = THIS_CHECKOUT, processes: int = 1) -> Process:
    args = [checkout.python, "-m", "app", "worker", "--workers", str(processes)]
    log_name = "worker.log" if processes == 1 else f"worker-{processes}.log"
    return Process("worker", args, child_env(env), log_dir / log_name, cwd=checkout.root)


# --- services: database and Redis namespace --------------------------------------------------------------


async def _pg_admin(statement: str) -> str:
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await connection.execute(statement)
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


def drop_redis_namespace(namespace: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        return len(keys)
    finally:
        client.close()


def redis_version() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=10)
    try:
        return str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()


@contextlib.contextmanager
def services_environment(info: dict[str, Any]) -> Iterator[dict[str, str]]:
    """A migrated database and a Redis namespace of this run's own; dropped and deleted on the way out."""
    suffix = uuid.uuid4().hex[:10]
    db_name, namespace = f"botarmy_bench_{suffix}", f"botarmy-bench-{suffix}"
    env = {
        **BENCH_ENV,
        "DATABASE_URL": f"postgresql://postgres@{HOST}:5432/{db_name}",
        "REDIS_URL": REDIS_URL,
        "BOTARMY_REDIS_NAMESPACE": namespace,
    }
    info.update(database=db_name, redis_namespace=namespace)
    try:
        info["postgres_version"] = asyncio.run(_pg_admin(f'CREATE DATABASE "{db_name}"'))
        info["redis_version"] = redis_version()
        from app.config import load_settings
        from app.db.engine import upgrade_database

        upgrade_database(load_settings(env).db)
        yield env
    finally:
        try:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
            print(f"  dropped database {db_name}")
        except Exception as exc:
            print(f"  WARNING: could not drop database {db_name}: {exc!r}", file=sys.stderr)
        try:
            print(f"  deleted {drop_redis_namespace(namespace)} Redis keys under {namespace}*")
        except Exception as exc:
            print(f"  WARNING: could not delete Redis keys under {namespace}*: {exc!r}", file=sys.stderr)


# --- statistics ------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of values sorted ascending."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize_ms(seconds: list[float]) -> dict[str, float]:
    values = sorted(seconds)
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "mean_ms": round(sum(values) / len(values) * 1000, 3),
        "p50_ms": round(percentile(values, 50) * 1000, 3),
        "p90_ms": round(percentile(values, 90) * 1000, 3),
        "p99_ms": round(percentile(values, 99) * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3),
    }


# --- the measurements ------------------------------------------------------------------------------------


async def make_project(client: httpx.AsyncClient, n_tasks: int) -> str:
    response = await client.post("/api/v1/projects/", json={"name": "status bench", "description": "bench"})
    if response.status_code != 201:
        raise BenchError(f"create project: {response.status_code} {response.text}")
    project_id = str(response.json()["id"])
    for i in range(n_tasks):
        body = {"agent_type": "coder", "instructions": f"bench task {i}: write a function"}
        response = await client.post(f"/api/v1/projects/{project_id}/tasks", json=body)
        if response.status_code != 201:
            raise BenchError(f"create task: {response.status_code} {response.text}")
    deadline = time.monotonic() + TASKS_DONE_SECONDS
    statuses: list[str] = []
    while time.monotonic() < deadline:
        response = await client.get(f"/api/v1/projects/{project_id}/status")
        statuses = [row["status"] for row in response.json()["tasks"]]
        if len(statuses) == n_tasks and all(s == "completed" for s in statuses):
            return project_id
        if any(s in {"failed", "cancelled"} for s in statuses):
            raise BenchError(f"a task did not complete: {statuses}")
        await asyncio.sleep(0.2)
    raise BenchError(f"tasks not completed within {TASKS_DONE_SECONDS:.0f} s: {statuses}")


async def _hammer(
    clients: list[httpx.AsyncClient], path: str, seconds: float, max_requests: int
) -> tuple[list[float], int, float]:
    """Each client one request after another, until the time or the request budget runs out."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    started = time.perf_counter()
    stop_at = started + seconds

    async def run(client: httpx.AsyncClient) -> None:
        nonlocal errors, issued
        while issued < max_requests and time.perf_counter() < stop_at:
            issued += 1
            t0 = time.perf_counter()
            try:
                ok = (await client.get(path)).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    await asyncio.gather(*(run(client) for client in clients))
    return latencies, errors, time.perf_counter() - started


def _process_cpu() -> dict[int, tuple[str, int, float]]:
    """pid -> (command, process group, CPU seconds so far) of every process, from /proc."""
    snapshot = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue  # gone meanwhile
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat.rsplit(")", 1)[1].split()
        snapshot[int(stat_path.parent.name)] = (comm, int(fields[2]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return snapshot


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class CpuMeter:
    """Where the machine's CPU time went during a phase, in percent of one core.

    Our process groups (api; worker and its children), this process, PostgreSQL's and Redis's
    processes (all of their databases and clients, not only ours), and the rest: `other` is what
    other users of the machine took from the two cores meanwhile. Processes that exit during the
    phase are not counted (except in `machine_busy`).
    """

    SERVICES = ("postgres", "redis-server")

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = groups

    def __enter__(self) -> CpuMeter:
        self._start = (time.perf_counter(), time.process_time(), _machine_jiffies(), _process_cpu())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, own0, (busy0, total0), procs0 = self._start
        procs1 = _process_cpu()
        busy1, total1 = _machine_jiffies()
        elapsed = time.perf_counter() - wall0
        spent = dict.fromkeys([*self.groups, "bench_client", *self.SERVICES], 0.0)
        spent["bench_client"] = time.process_time() - own0
        by_group = {pgid: name for name, pgid in self.groups.items()}
        for pid, (comm, pgrp, cpu) in procs1.items():
            name = by_group.get(pgrp) or (comm if comm in self.SERVICES else None)
            if name is not None:
                spent[name] += cpu - procs0.get(pid, (comm, pgrp, 0.0))[2]
        machine = (busy1 - busy0) / max(1, total1 - total0) * 100 * (os.cpu_count() or 1)
        self.result = {f"{name.replace('-server', '')}_cpu_percent": v / elapsed * 100 for name, v in spent.items()}
        self.result["machine_busy_percent"] = machine
        self.result["other_cpu_percent"] = max(0.0, machine - sum(v / elapsed * 100 for v in spent.values()))
        self.result = {name: round(value, 1) for name, value in self.result.items()}


async def wait_for_quiet(max_wait: float, threshold: float = 30.0) -> float:
    """Wait (at most `max_wait` s) for a second in which the machine is nearly idle; its busy %, one core = 100."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, total0 = _machine_jiffies()
        await asyncio.sleep(1.0)
        busy1, total1 = _machine_jiffies()
        busy = (busy1 - busy0) / max(1, total1 - total0) * 100 * (os.cpu_count() or 1)
        if busy < threshold or time.monotonic() > deadline:
            return round(busy, 1)


async def status_load(target: Target, project_id: str, concurrency: int, config: Config) -> dict[str, Any]:
    path = f"/api/v1/projects/{project_id}/status"
    # One AsyncClient (one keep-alive connection) per simulated client: a single pool shared by
    # many concurrent requests costs httpx itself a lot of CPU (encode/httpx#3215), which on
    # two cores would be measured instead of the server.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(target.client(limits=limits)) for _ in range(concurrency)]
        busy_before = await wait_for_quiet(config.idle_wait)
        await _hammer(clients, path, WARMUP_SECONDS, config.max_requests)  # connections, caches
        with CpuMeter(target.groups) as cpu:
            latencies, errors, elapsed = await _hammer(clients, path, config.duration, config.max_requests)
    return {
        "concurrency": concurrency,
        "machine_busy_before_percent": busy_before,
        "duration_s": round(elapsed, 3),
        "requests_ok": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency": summarize_ms(latencies),
        "cpu": cpu.result,
    }


async def event_latency(target: Target, project_id: str, config: Config) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    ws_url = target.base_url.replace("http://", "ws://") + f"/ws/projects/{project_id}"
    received: asyncio.Queue[tuple[float, float, str]] = asyncio.Queue()
    send_to_receive: list[float] = []  # PATCH sent -> WebSocket message received (one clock: perf_counter)
    timestamp_to_receive: list[float] = []  # event created_at (server's wall clock) -> received (our wall clock)
    http_round_trip: list[float] = []
    before_response = 0
    phase_deadline = time.monotonic() + EVENTS_PHASE_SECONDS

    async def read(ws: Any) -> None:
        async for message in ws:
            received.put_nowait((time.perf_counter(), time.time(), str(message)))

    async with (
        target.client() as client,
        connect(
            ws_url,
            additional_headers=target.headers,
            open_timeout=10,
            close_timeout=5,
            ping_interval=None,
            max_queue=None,
        ) as ws,
    ):
        reader = asyncio.create_task(read(ws))
        try:
            busy_before = await wait_for_quiet(config.idle_wait)
            while not received.empty():  # anything left over from the task phase
                received.get_nowait()
            meter = CpuMeter(target.groups)
            for i in range(config.warmup_events + config.events):
                if i == config.warmup_events:
                    meter.__enter__()
                if time.monotonic() > phase_deadline:
                    raise BenchError(f"event phase exceeded {EVENTS_PHASE_SECONDS:.0f} s after {i} events")
                sent = time.perf_counter()
                response = await client.patch(f"/api/v1/projects/{project_id}", json={"description": f"event {i}"})
                responded = time.perf_counter()
                if response.status_code != 200:
                    raise BenchError(f"PATCH: {response.status_code} {response.text}")
                while True:
                    try:
                        got, got_wall, raw = await asyncio.wait_for(received.get(), EVENT_TIMEOUT_SECONDS)
                    except TimeoutError:
                        raise BenchError(f"event {i} not received within {EVENT_TIMEOUT_SECONDS:.0f} s") from None
                    message = json.loads(raw)
                    if message["event_type"] == "project_updated" and message["project_id"] == project_id:
                        break
                if i < config.warmup_events:
                    continue
                created = datetime.datetime.fromisoformat(message["timestamp"]).timestamp()
                send_to_receive.append(got - sent)
                timestamp_to_receive.append(got_wall - created)
                http_round_trip.append(responded - sent)
                before_response += got < responded
            meter.__exit__()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
    return {
        "events": len(send_to_receive),
        "machine_busy_before_percent": busy_before,
        "send_to_receive": summarize_ms(send_to_receive),
        "event_timestamp_to_receive": summarize_ms(timestamp_to_receive),
        "patch_round_trip": summarize_ms(http_round_trip),
        "received_before_http_response": before_response,
        "cpu": meter.result,
    }


async def measure(target: Target, config: Config) -> dict[str, Any]:
    async with target.client() as client:
        project_id = await make_project(client, config.tasks)
        status = (await client.get(f"/api/v1/projects/{project_id}/status")).content
    print(f"  project {project_id}: {config.tasks} tasks completed; status body {len(status)} bytes")
    loads = []
    for concurrency in config.concurrency:
        print(f"  status load, {concurrency} concurrent clients, {config.duration:g} s …", flush=True)
        loads.append(await status_load(target, project_id, concurrency, config))
    print(f"  event latency, {config.events} events …", flush=True)
    events = await event_latency(target, project_id, config)
    return {"status_body_bytes": len(status), "status_load": loads, "events": events}


def run_mode(mode: str, config: Config) -> dict[str, Any]:
    print(f"== {mode} mode", flush=True)
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=f"botarmy-bench-{mode}-") as workdir:
        log_dir = Path(workdir)
        processes: list[Process] = []
        with contextlib.ExitStack() as stack:
            if mode == "embedded":
                env = {**BENCH_ENV, "BOTARMY_DATA_DIR": str(log_dir / "data")}
            else:
                env = stack.enter_context(services_environment(info))
            try:
                if mode == "services":
                    processes.append(start_worker(env, log_dir))
                token = create_admin_token(env)
                info["authenticated"] = token is not None
                api, base_url = start_api(env, log_dir)
                processes.append(api)
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                groups = {process.name: process.popen.pid for process in processes}
                results = asyncio.run(measure(Target(base_url, headers, groups), config))
            except BaseException:
                for process in processes:
                    print(f"--- {process.name} log (tail)\n{process.log_tail()}", file=sys.stderr)
                raise
            finally:
                for process in reversed(processes):  # before the database is dropped
                    process.stop()
    return {**info, **results}


# --- report ----------------------------------------------------------------------------------------------


def git_head() -> str | None:
    """The commit checked out (read-only; uncommitted changes of the working tree are not told)."""
    git = shutil.which("git")
    if git is None:
        return None
    done = subprocess.run([git, "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    return done.stdout.strip() or None


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def cpu_columns(cpu: dict[str, float]) -> str:
    worker = f"{cpu['worker_cpu_percent']:>7.0f}%" if "worker_cpu_percent" in cpu else f"{'-':>8}"
    return (
        f"{cpu['api_cpu_percent']:>5.0f}%{worker}{cpu['bench_client_cpu_percent']:>6.0f}%"
        f"{cpu['postgres_cpu_percent']:>5.0f}%{cpu['other_cpu_percent']:>6.0f}%"
    )


def print_table(results: dict[str, Any]) -> None:
    print()
    print("GET /api/v1/projects/{id}/status")
    header = (
        f"{'mode':<10}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}"
        f"{'api':>6}{'worker':>8}{'bench':>7}{'pg':>6}{'other':>7}"
    )
    print(header)
    print("-" * len(header))
    print(f"{'':<63}CPU during the run, % of one core")
    for mode, result in results.items():
        for load in result.get("status_load", []):
            lat = load["latency"]
            print(
                f"{mode:<10}{load['concurrency']:>8}{load['requests_per_s']:>10.1f}{lat.get('p50_ms', math.nan):>9.2f}"
                f"{lat.get('p99_ms', math.nan):>9.2f}{lat.get('max_ms', math.nan):>9.2f}{load['errors']:>8}"
                f"{cpu_columns(load['cpu'])}"
            )
    print()
    print("PATCH /api/v1/projects/{id} -> project_updated on /ws/projects/{id} (sequential)")
    header = f"{'mode':<10}{'events':>7}{'measure':>22}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'other CPU':>11}"
    print(header)
    print("-" * len(header))
    for mode, result in results.items():
        events = result.get("events")
        if not events:
            continue
        for label, key in (
            ("PATCH sent -> ws recv", "send_to_receive"),
            ("event ts -> ws recv", "event_timestamp_to_receive"),
            ("PATCH round trip", "patch_round_trip"),
        ):
            s = events[key]
            print(
                f"{mode:<10}{events['events']:>7}{label:>22}{s.get('p50_ms', math.nan):>9.2f}"
                f"{s.get('p99_ms', math.nan):>9.2f}{s.get('max_ms', math.nan):>9.2f}"
                f"{events['cpu']['other_cpu_percent']:>10.0f}%"
            )
    print()


def parse_args(argv: list[str] | None) -> tuple[list[str], Config]:
    parser = argparse.ArgumentParser(prog="python -m bench.status_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "services", "both"], default="both")
    parser.add_argument("--concurrency", default="20,50", help="comma-separated client counts (default 20,50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level (max 120)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="request cap per concurrency level")
    parser.add_argument("--tasks", type=int, default=20, help="completed tasks in the project (max 500)")
    parser.add_argument("--events", type=int, default=500, help="events measured (max 10000)")
    parser.add_argument("--warmup-events", type=int, default=20)
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=60.0,
        help="before each phase, wait up to this many seconds for the machine to be idle (max 600)",
    )
    args = parser.parse_args(argv)
    concurrency = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    if not concurrency or not all(1 <= c <= 1000 for c in concurrency):
        parser.error("--concurrency: 1..1000 each")
    if not 0 < args.duration <= 120:
        parser.error("--duration: 0 < seconds <= 120")
    if not 1 <= args.max_requests <= 10_000_000:
        parser.error("--max-requests: 1..10000000")
    if not 0 <= args.idle_wait <= 600:
        parser.error("--idle-wait: 0..600")
    if not 1 <= args.tasks <= 500 or not 1 <= args.events <= 10_000 or not 0 <= args.warmup_events <= 1000:
        parser.error("--tasks 1..500, --events 1..10000, --warmup-events 0..1000")
    modes = ["embedded", "services"] if args.mode == "both" else [args.mode]
    config = Config(
        concurrency, args.duration, args.max_requests, args.tasks, args.events, args.warmup_events, args.idle_wait
    )
    return modes, config


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: processes stopped, database dropped


def main(argv: list[str] | None = None) -> int:
    modes, config = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.datetime.now(datetime.UTC)
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for mode in modes:
        try:
            results[mode] = run_mode(mode, config)
        except Exception as exc:
            failures[mode] = str(exc) or repr(exc)
            print(f"!! {mode} mode failed: {exc}", file=sys.stderr)
    print_table(results)
    report = {
        "benchmark": "status_bench",
        "started_at": started.isoformat(),
        "machine": machine(),
        "git_head": git_head(),
        "config": asdict(config),
        "env": BENCH_ENV,
        "results": results,
        "failures": failures,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"status_bench-{'-'.join(modes)}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {path.relative_to(REPO_ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

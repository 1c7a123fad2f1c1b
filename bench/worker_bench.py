"""The worker alone: offline agent tasks per second from a full queue, against the bare taskiq worker.

    .venv/bin/python -m bench.worker_bench [--tasks 300] [--rounds 2] [--botarmy-repo ../wt-before]

`bench.compare --phases throughput` times the tasks from the first submission through the api to
the last completion, so its figure is bounded by the api's submission rate as much as by the
worker. Here the jobs are queued first, with no worker running, and then one worker process
(`--max-async-tasks 10` for both) is started: the rate is (tasks - 1) / (last completion - first
completion), from the database, the same way for both workers. BotArmy: coder tasks submitted
through the api (`botarmy worker --workers 1`, services mode, its own database and Redis
namespace); bare: `bench.bare_taskiq`'s one-row jobs sent to its own queue. They alternate, bare
first; the worker process's CPU per task (user + system, from /proc, start-up excluded: counted
from its first completion) is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from bench.compare import checkout_of, drop_redis_namespace, new_project, submit_tasks
from bench.status_bench import (
    REDIS_URL,
    BenchError,
    Checkout,
    Process,
    child_env,
    create_admin_token,
    services_environment,
    start_api,
    start_worker,
)

WAIT_SECONDS = 180.0
WARM_TASKS = 10  # done first (the queue is in order): imports, connections, caches


def process_cpu(parent: int) -> float:
    """User + system seconds of `parent`'s children (taskiq's worker processes)."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    total = 0.0
    for pid in children.read_text().split() if children.exists() else []:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def follow(dsn: str, query: str, args: tuple[Any, ...], count: int, worker: Process) -> dict[str, float]:
    """Wait until `query` (completion times) has `count` rows; the rate between the first and the last."""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        cpu_at_first: float | None = None
        rows: list[Any] = []
        while time.monotonic() < deadline:
            rows = await connection.fetch(query, *args)
            if rows and cpu_at_first is None:
                cpu_at_first = process_cpu(worker.popen.pid)
            if len(rows) >= count:
                break
            await asyncio.sleep(0.02)
        else:
            raise BenchError(f"{len(rows)} of {count} done within {WAIT_SECONDS:.0f} s")
        cpu = process_cpu(worker.popen.pid) - (cpu_at_first or 0.0)
    finally:
        await connection.close()
    times = sorted(row[0] for row in rows)
    span = (times[-1] - times[0]).total_seconds()
    return {
        "tasks": count,
        "span_s": round(span, 3),
        "tasks_per_s": round((count - 1) / span, 1),
        "cpu_ms_per_task": round(1000 * cpu / (count - 1), 2),
    }


def botarmy_round(env: dict[str, str], checkout: Checkout, tasks: int, log_dir: Path) -> dict[str, float]:
    token = create_admin_token(env, checkout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    api, base_url = start_api(env, log_dir, checkout)
    try:

        async def fill() -> str:
            async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
                warm = await new_project(client, "worker bench warm-up")
                measured = await new_project(client, "worker bench")
            await submit_tasks(base_url, headers, warm, WARM_TASKS)
            await submit_tasks(base_url, headers, measured, tasks)
            return measured

        project_id = asyncio.run(fill())
        worker = start_worker(env, log_dir, checkout)
        try:
            query = "SELECT finished_at FROM agent_task WHERE project_id = $1 AND status = 'completed'"
            return asyncio.run(follow(env["DATABASE_URL"], query, (uuid.UUID(project_id),), tasks, worker))
        finally:
            worker.stop()
    finally:
        api.stop()


def bare_round(env: dict[str, str], tasks: int, log_dir: Path) -> dict[str, float]:
    namespace = f"{env['BOTARMY_REDIS_NAMESPACE']}-bare-{uuid.uuid4().hex[:6]}"
    os.environ["BARE_NAMESPACE"] = namespace  # read when bench.bare_taskiq is imported: its broker's queue
    bare_taskiq = importlib.reload(importlib.import_module("bench.bare_taskiq"))

    dsn = env["DATABASE_URL"]
    run = uuid.uuid4().hex[:8]

    async def fill() -> None:
        engine = create_async_engine(bare_taskiq.async_url(dsn))
        async with engine.begin() as connection:
            await connection.run_sync(bare_taskiq.Base.metadata.create_all)
        await engine.dispose()
        broker = bare_taskiq.broker
        await broker.startup()  # declares the consumer group: the jobs wait in the stream
        try:
            for number in range(WARM_TASKS):
                await bare_taskiq.insert_row.kiq(f"warm-{run} {number}")
            for number in range(tasks):
                await bare_taskiq.insert_row.kiq(f"run-{run} {number}")
        finally:
            await broker.shutdown()

    asyncio.run(fill())
    bare_env = {**child_env({}), "DATABASE_URL": dsn, "REDIS_URL": REDIS_URL, "BARE_NAMESPACE": namespace}
    args = [sys.executable, "-m", "taskiq", "worker", "bench.bare_taskiq:broker", "--max-async-tasks", "10"]
    worker = Process("bare-worker", [*args, "--workers", "1"], bare_env, log_dir / "bare-worker.log")
    try:
        query = "SELECT done_at FROM bench_bare_row WHERE payload LIKE $1"
        return asyncio.run(follow(dsn, query, (f"run-{run} %",), tasks, worker))
    finally:
        worker.stop()
        drop_redis_namespace(namespace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--botarmy-repo", type=Path, default=None)
    args = parser.parse_args(argv)
    checkout = checkout_of(args.botarmy_repo)
    results: dict[str, list[dict[str, float]]] = {"bare": [], "botarmy": []}
    with TemporaryDirectory(prefix="botarmy-worker-bench-") as workdir, services_environment({}) as env:
        for _ in range(args.rounds):
            results["bare"].append(bare_round(env, args.tasks, Path(workdir)))
            print(f"  bare taskiq worker: {results['bare'][-1]}", flush=True)
            results["botarmy"].append(botarmy_round(env, checkout, args.tasks, Path(workdir)))
            print(f"  BotArmy worker ({checkout.root}): {results['botarmy'][-1]}", flush=True)
    bare = sorted(run["tasks_per_s"] for run in results["bare"])[len(results["bare"]) // 2]
    mine = sorted(run["tasks_per_s"] for run in results["botarmy"])[len(results["botarmy"]) // 2]
    print(f"\nfrom a full queue, 1 worker process: BotArmy {mine}/s, bare taskiq {bare}/s, ratio {mine / bare:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

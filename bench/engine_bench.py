"""Benchmark of the workflow engine: its own time per task, and executions side by side on one worker.

    .venv/bin/python -m bench.engine_bench --mode embedded|services|both

Each mode starts `python -m app serve` as a subprocess on a free 127.0.0.1 port (and, in services
mode, one `python -m app worker --workers 1`), as bench/status_bench.py does, and runs the default
workflow `botarmy-sdlc` (6 steps, the coder once per task of the implementation plan) on projects of
oversight `low` (no gates), with the offline model provider:

1. overhead: `--sequential` executions one after the other, with no model delay. From the database
   (agent_task timestamps, llm_usage latencies) the engine's own time per task, (execution wall time
   - time inside model calls) / tasks, and where it goes: created -> queued -> started (dispatch,
   pickup), started -> finished minus the model call (executor), finished -> next task created (advance).
2. concurrency: for each K of `--concurrency`, K executions started at the same moment, each idea
   carrying `[[offline:delay=<--delay>]]` so that every model call takes that long; each execution's
   completion time, tasks/s, and the ratio to a single execution.

An execution with a task that waited for the periodic sweep (a second attempt, or a follow-up task
queued more than 5 s after it was created) is flagged "stalled": the overhead figures leave it out and
list it apart; the concurrency figures give both, with and without. The app's log is kept in
bench/results/ when it wrote anything (`--log-level INFO` for diagnosis).

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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.status_bench import (
    APP_WORKER_SETTINGS,
    BENCH_ENV,
    REPO_ROOT,
    RESULTS_DIR,
    BenchError,
    CpuMeter,
    Process,
    _terminate,
    create_admin_token,
    git_head,
    machine,
    percentile,
    services_environment,
    start_api,
    start_worker,
    summarize_ms,
    wait_for_quiet,
)

WORKFLOW_ID = "botarmy-sdlc"
# Enough words for the offline architect to plan five tasks (so ten tasks per execution).
IDEA = "A recipe sharing service: members publish recipes, plan weekly meals, build shopping lists and track nutrition."
# status_bench's BENCH_ENV (log level WARNING, rate limit out of the way) but the app's own lease
# and sweep settings.
ENGINE_ENV = {**BENCH_ENV, **APP_WORKER_SETTINGS}

REQUEST_TIMEOUT_SECONDS = 60.0  # K simultaneous POSTs on SQLite queue for its one write lock
EXECUTION_TIMEOUT_SECONDS = 120.0  # one execution of the overhead phase
LEVEL_TIMEOUT_BASE_SECONDS = 120.0  # a concurrency level: this plus twice its model time run one by one
LEVEL_TIMEOUT_MAX_SECONDS = 900.0
POLL_SECONDS = 0.2
TASKS_PER_EXECUTION_ESTIMATE = 10
# created -> queued is a commit and a send; this long means the follow-up was never sent and the sweep
# queued the task (after BOTARMY_PENDING_REQUEUE_SECONDS, 10 s).
LATE_DISPATCH_SECONDS = 5.0
# Execution states the bench stops waiting on; `waiting_for_hitl` would need a human, which no
# step of this workflow should at oversight low.
END_STATUSES = frozenset({"completed", "failed", "cancelled", "waiting_for_hitl"})


@dataclass(frozen=True)
class Config:
    sequential: int
    warmup: int
    concurrency: tuple[int, ...]
    delay: float
    worker_concurrency: int | None
    idle_wait: float
    log_level: str


@dataclass(frozen=True)
class Api:
    base_url: str
    headers: dict[str, str]
    groups: dict[str, int]  # name -> process group id, for CpuMeter

    def client(self, connections: int = 10) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=REQUEST_TIMEOUT_SECONDS, limits=limits
        )


# --- what the database says ------------------------------------------------------------------------------


@dataclass
class TaskRecord:
    task_id: str
    step: int
    agent: str
    status: str
    attempts: int
    created: float  # epoch seconds, written by the app's processes (same machine, same clock as ours)
    queued: float | None
    started: float | None
    finished: float | None
    model_s: float = 0.0  # sum of llm_usage.latency_ms: the provider call and the answer's validation
    calls: int = 0
    model_spans: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class ExecutionRecord:
    execution_id: str
    status: str
    created: float
    finished: float | None
    tasks: list[TaskRecord]


def epoch(value: datetime.datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


class Database:
    """Read-only access to the app's database through its own models (SQLite file or PostgreSQL)."""

    def __init__(self, env: dict[str, str]) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        from app.config import load_settings

        self.engine = create_async_engine(load_settings(env).db.url, pool_size=2, max_overflow=0)

    async def close(self) -> None:
        await self.engine.dispose()

    async def statuses(self, execution_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        from sqlalchemy import select

        from app.workflows.models import WorkflowExecution

        statement = select(WorkflowExecution.id, WorkflowExecution.status).where(
            WorkflowExecution.id.in_(execution_ids)
        )
        async with self.engine.connect() as connection:
            return {row[0]: str(row[1]) for row in await connection.execute(statement)}

    async def records(self, execution_ids: list[uuid.UUID]) -> list[ExecutionRecord]:
        from sqlalchemy import select

        from app.agents.models import LlmUsage
        from app.tasks.models import AgentTask
        from app.workflows.models import WorkflowExecution

        executions = select(
            WorkflowExecution.id, WorkflowExecution.status, WorkflowExecution.created_at, WorkflowExecution.finished_at
        ).where(WorkflowExecution.id.in_(execution_ids))
        tasks = select(
            AgentTask.id,
            AgentTask.workflow_execution_id,
            AgentTask.step_id,
            AgentTask.agent_type,
            AgentTask.status,
            AgentTask.attempts,
            AgentTask.created_at,
            AgentTask.queued_at,
            AgentTask.started_at,
            AgentTask.finished_at,
        ).where(AgentTask.workflow_execution_id.in_(execution_ids))
        usage = select(LlmUsage.task_id, LlmUsage.latency_ms, LlmUsage.created_at).where(
            LlmUsage.task_id.in_(select(AgentTask.id).where(AgentTask.workflow_execution_id.in_(execution_ids)))
        )
        async with self.engine.connect() as connection:
            execution_rows = list(await connection.execute(executions))
            task_rows = list(await connection.execute(tasks))
            usage_rows = list(await connection.execute(usage))
        by_task: dict[uuid.UUID, TaskRecord] = {}
        by_execution: dict[uuid.UUID, list[TaskRecord]] = {row[0]: [] for row in execution_rows}
        for task_id, execution_id, step_id, agent, status, attempts, created, queued, started, finished in task_rows:
            record = TaskRecord(
                task_id=str(task_id),
                step=int(step_id) if step_id is not None else -1,
                agent=str(agent),
                status=str(status),
                attempts=int(attempts),
                created=epoch(created) or math.nan,
                queued=epoch(queued),
                started=epoch(started),
                finished=epoch(finished),
            )
            by_task[task_id] = record
            by_execution.setdefault(execution_id, []).append(record)
        for task_id, latency_ms, created in usage_rows:
            task = by_task.get(task_id)
            end = epoch(created)
            if task is None or end is None:
                continue
            seconds = float(latency_ms) / 1000
            task.model_s += seconds
            task.calls += 1
            task.model_spans.append((end - seconds, end))
        return [
            ExecutionRecord(
                execution_id=str(execution_id),
                status=str(status),
                created=epoch(created) or math.nan,
                finished=epoch(finished),
                tasks=by_execution.get(execution_id, []),
            )
            for execution_id, status, created, finished in execution_rows
        ]

    async def wait_for(self, execution_ids: list[uuid.UUID], seconds: float) -> dict[uuid.UUID, str]:
        """Poll until every execution is in an end state, or the time is up; the last statuses seen."""
        deadline = time.monotonic() + seconds
        statuses: dict[uuid.UUID, str] = {}
        while time.monotonic() < deadline:
            statuses = await self.statuses(execution_ids)
            if len(statuses) == len(execution_ids) and all(s in END_STATUSES for s in statuses.values()):
                return statuses
            await asyncio.sleep(POLL_SECONDS)
        return statuses


# --- statistics ------------------------------------------------------------------------------------------


def stats_ms(seconds: Iterable[float]) -> dict[str, float]:
    """status_bench's summary (count, mean, p50, p90, p99, max in ms) with p95 as well."""
    values = sorted(v for v in seconds if not math.isnan(v))
    summary = summarize_ms(values)
    if values:
        summary["p95_ms"] = round(percentile(values, 95) * 1000, 3)
    return summary


def union_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """Length of the union of intervals: time in which at least one model call was running."""
    total, end = 0.0, -math.inf
    for start, stop in sorted(spans):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def peak_overlap(spans: Iterable[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(stop, -1) for _, stop in spans])
    peak = current = 0
    for _, delta in events:  # at equal times the end (-1) sorts first
        current += delta
        peak = max(peak, current)
    return peak


PARTS = ("dispatch", "pickup", "executor", "advance")


def analyse(record: ExecutionRecord) -> dict[str, Any]:
    """One finished execution: wall time, model time, the engine's time, and its parts per task.

    Per task: dispatch = created -> queued, pickup = queued -> started, executor = started -> finished
    minus its model calls, advance = the previous step's last finish -> this task created. Per
    execution: start = execution created -> first task created, tail = last task finished -> execution
    finished, and the critical path (per step the run that finished last), whose parts add up to the wall.
    """
    finished_at = record.finished
    complete = all(t.status == "completed" and None not in (t.queued, t.started, t.finished) for t in record.tasks)
    if finished_at is None or not complete or not record.tasks:
        return {"complete": False, "status": record.status, "tasks": len(record.tasks)}
    stages: dict[int, list[TaskRecord]] = {}
    for task in sorted(record.tasks, key=lambda t: (t.step, t.created)):
        stages.setdefault(task.step, []).append(task)
    samples: dict[str, list[float]] = {part: [] for part in PARTS}
    critical = dict.fromkeys(("start", *PARTS, "model", "tail"), 0.0)
    previous_finish: float | None = None
    for step in sorted(stages):
        group = stages[step]
        for task in group:
            queued, started, finished = task.queued or 0.0, task.started or 0.0, task.finished or 0.0
            samples["dispatch"].append(queued - task.created)
            samples["pickup"].append(started - queued)
            samples["executor"].append(finished - started - task.model_s)
            if previous_finish is not None:
                samples["advance"].append(task.created - previous_finish)
        last = max(group, key=lambda t: t.finished or 0.0)
        gap = last.created - (record.created if previous_finish is None else previous_finish)
        critical["start" if previous_finish is None else "advance"] += gap
        critical["dispatch"] += (last.queued or 0.0) - last.created
        critical["pickup"] += (last.started or 0.0) - (last.queued or 0.0)
        critical["executor"] += (last.finished or 0.0) - (last.started or 0.0) - last.model_s
        critical["model"] += last.model_s
        previous_finish = last.finished or 0.0
    critical["tail"] = finished_at - (previous_finish or 0.0)
    stalls = [
        {
            "task_id": t.task_id,
            "agent": t.agent,
            "attempts": t.attempts,
            "dispatch_s": round((t.queued or 0.0) - t.created, 3),
            "started_s": round((t.started or 0.0) - record.created, 3),  # from the execution's creation
            "kind": "second attempt" if t.attempts > 1 else "late dispatch",
        }
        for t in record.tasks
        if t.attempts > 1 or (t.queued or 0.0) - t.created > LATE_DISPATCH_SECONDS
    ]
    wall = finished_at - record.created
    model_union = union_seconds(span for task in record.tasks for span in task.model_spans)
    engine = wall - model_union
    return {
        "complete": True,
        "tasks": len(record.tasks),
        "steps": len(stages),
        "attempts_over_one": sum(task.attempts > 1 for task in record.tasks),
        # tasks that waited for the sweep: an attempt lost (second attempt) or a follow-up never sent
        "stalls": stalls,
        "model_calls": sum(task.calls for task in record.tasks),
        "wall_s": wall,
        "model_union_s": model_union,
        "model_sum_s": sum(task.model_s for task in record.tasks),
        "engine_s": engine,
        "engine_per_task_s": engine / len(record.tasks),
        "engine_per_step_s": engine / len(stages),
        "critical_path_s": critical,
        "samples_s": samples,
        "executor_by_agent_s": {
            agent: [
                t.finished - t.started - t.model_s
                for t in record.tasks
                if t.agent == agent and t.finished and t.started
            ]
            for agent in dict.fromkeys(t.agent for t in sorted(record.tasks, key=lambda t: t.step))
        },
    }


# --- the measurements ------------------------------------------------------------------------------------


async def make_project(client: httpx.AsyncClient, name: str) -> uuid.UUID:
    body = {"name": name, "description": "engine bench", "oversight_level": "low"}
    response = await client.post("/api/v1/projects/", json=body)
    if response.status_code != 201:
        raise BenchError(f"create project: {response.status_code} {response.text}")
    return uuid.UUID(response.json()["id"])


async def start_execution(client: httpx.AsyncClient, project_id: uuid.UUID, idea: str) -> tuple[uuid.UUID, float]:
    """POST /api/v1/executions; the execution id and the request's round trip in seconds."""
    body = {"project_id": str(project_id), "workflow_id": WORKFLOW_ID, "inputs": {"idea": idea}}
    sent = time.perf_counter()
    response = await client.post("/api/v1/executions", json=body)
    elapsed = time.perf_counter() - sent
    if response.status_code != 202:
        raise BenchError(f"start execution: {response.status_code} {response.text[:500]}")
    return uuid.UUID(response.json()["id"]), elapsed


async def verify(client: httpx.AsyncClient, records: list[ExecutionRecord]) -> list[str]:
    """What `GET /api/v1/executions/{id}` says, checked against the database; the disagreements."""
    problems: list[str] = []
    for record in records:
        response = await client.get(f"/api/v1/executions/{record.execution_id}")
        if response.status_code != 200:
            problems.append(f"{record.execution_id}: GET {response.status_code}")
            continue
        body = response.json()
        runs = sum(len(step["runs"]) for step in body["steps"])
        not_done = [f"{s['index']}:{s['status']}" for s in body["steps"] if s["status"] not in ("completed", "skipped")]
        if body["status"] != "completed" or not_done or runs != len(record.tasks):
            problems.append(
                f"{record.execution_id}: {body['status']}, steps not done {not_done}, "
                f"{runs} runs vs {len(record.tasks)} tasks; error {body.get('error')!r}"
            )
    return problems


def idea_text(delay: float) -> str:
    return f"{IDEA} [[offline:delay={delay:g}]]" if delay > 0 else IDEA


async def overhead_phase(api: Api, db: Database, config: Config) -> dict[str, Any]:
    """Executions one after the other with no model delay; the engine's own time per task."""
    async with api.client() as client:
        for i in range(config.warmup):
            project_id = await make_project(client, f"engine bench warm-up {i}")
            execution_id, _ = await start_execution(client, project_id, IDEA)
            await db.wait_for([execution_id], EXECUTION_TIMEOUT_SECONDS)
        busy_before = await wait_for_quiet(config.idle_wait)
        execution_ids: list[uuid.UUID] = []
        post_s: list[float] = []
        statuses: dict[uuid.UUID, str] = {}
        with CpuMeter(api.groups) as cpu:
            started = time.perf_counter()
            for i in range(config.sequential):
                project_id = await make_project(client, f"engine bench sequential {i}")
                execution_id, elapsed = await start_execution(client, project_id, IDEA)
                execution_ids.append(execution_id)
                post_s.append(elapsed)
                statuses |= await db.wait_for([execution_id], EXECUTION_TIMEOUT_SECONDS)
                if statuses.get(execution_id) != "completed":
                    break  # analysed and reported below
            elapsed_phase = time.perf_counter() - started
        records = await db.records(execution_ids)
        problems = await verify(client, records)
    analyses = [analyse(record) for record in records]
    finished = [a for a in analyses if a["complete"]]
    # The figures are the engine's normal path: executions that waited for the sweep are reported apart.
    done = [a for a in finished if not a["stalls"]]
    stalled = [
        {"execution_id": str(r.execution_id), "wall_s": round(a["wall_s"], 3), "stalls": a["stalls"]}
        for r, a in zip(records, analyses, strict=True)
        if a["complete"] and a["stalls"]
    ]
    per_task: dict[str, list[float]] = {part: [s for a in done for s in a["samples_s"][part]] for part in PARTS}
    by_agent: dict[str, list[float]] = {}
    for a in done:
        for agent, values in a["executor_by_agent_s"].items():
            by_agent.setdefault(agent, []).extend(values)
    return {
        "executions": len(execution_ids),
        "completed": len(finished),
        "measured": len(done),
        "stalled": stalled,
        "statuses": sorted(statuses.values()),
        "api_check_problems": problems,
        "machine_busy_before_percent": busy_before,
        "phase_s": round(elapsed_phase, 3),
        "tasks_per_execution": [a["tasks"] for a in analyses],
        "attempts_over_one": sum(a.get("attempts_over_one", 0) for a in finished),
        "post_round_trip": stats_ms(post_s),
        "execution_wall": stats_ms(a["wall_s"] for a in done),
        "model_union_per_execution": stats_ms(a["model_union_s"] for a in done),
        "model_sum_per_execution": stats_ms(a["model_sum_s"] for a in done),
        "engine_per_task": stats_ms(a["engine_per_task_s"] for a in done),
        "engine_per_step": stats_ms(a["engine_per_step_s"] for a in done),
        "per_task": {part: stats_ms(values) for part, values in per_task.items()},
        "start": stats_ms(a["critical_path_s"]["start"] for a in done),
        "tail": stats_ms(a["critical_path_s"]["tail"] for a in done),
        "critical_path_mean_ms": {
            part: round(sum(a["critical_path_s"][part] for a in done) / max(1, len(done)) * 1000, 2)
            for part in ("start", *PARTS, "model", "tail")
        },
        "executor_by_agent": {agent: stats_ms(values) for agent, values in by_agent.items()},
        "cpu": cpu.result,
    }


async def burst(api: Api, db: Database, k: int, config: Config) -> dict[str, Any]:
    """K executions started at the same moment; their completion times, from that moment."""
    timeout = min(
        LEVEL_TIMEOUT_MAX_SECONDS, LEVEL_TIMEOUT_BASE_SECONDS + 2 * k * TASKS_PER_EXECUTION_ESTIMATE * config.delay
    )
    async with api.client(connections=k) as client:
        projects = [await make_project(client, f"engine bench K={k} #{i}") for i in range(k)]
        busy_before = await wait_for_quiet(config.idle_wait)
        with CpuMeter(api.groups) as cpu:
            t0 = time.time()
            answers = await asyncio.gather(
                *(start_execution(client, project_id, idea_text(config.delay)) for project_id in projects),
                return_exceptions=True,
            )
            started = [answer for answer in answers if not isinstance(answer, BaseException)]
            errors = [repr(answer) for answer in answers if isinstance(answer, BaseException)]
            execution_ids = [execution_id for execution_id, _ in started]
            statuses = await db.wait_for(execution_ids, timeout) if execution_ids else {}
        records = await db.records(execution_ids)
        problems = await verify(client, records)
    analyses = [analyse(record) for record in records]
    done_records = [r for r, a in zip(records, analyses, strict=True) if a["complete"]]
    done = [a for a in analyses if a["complete"]]
    finishes = [r.finished for r in done_records if r.finished is not None]
    tasks = [t for r in done_records for t in r.tasks]
    working = [(t.started, t.finished) for t in tasks if t.started is not None and t.finished is not None]
    last = max(finishes) if finishes else t0
    return {
        "k": k,
        "executions_started": len(execution_ids),
        "completed": len(done),
        "post_errors": errors[:5],
        "timed_out": any(s not in END_STATUSES for s in statuses.values()) or len(statuses) < len(execution_ids),
        "statuses": {s: sorted(statuses.values()).count(s) for s in sorted(set(statuses.values()))},
        "api_check_problems": problems[:10],
        "machine_busy_before_percent": busy_before,
        "tasks": len(tasks),
        "attempts_over_one": sum(t.attempts > 1 for t in tasks),
        "post_round_trip": stats_ms(elapsed for _, elapsed in started),
        # from the moment the K POSTs were sent to each execution's finished_at
        "completion": stats_ms(f - t0 for f in finishes),
        # Executions with a task that waited for the sweep (see `analyse`), and the figures without them:
        "stalled_executions": sum(bool(a["stalls"]) for a in done),
        "stalls": [stall for a in done for stall in a["stalls"]][:20],
        "completion_unstalled": stats_ms(
            r.finished - t0 for r, a in zip(done_records, done, strict=True) if r.finished and not a["stalls"]
        ),
        "execution_wall": stats_ms(a["wall_s"] for a in done),
        "engine_per_task": stats_ms(a["engine_per_task_s"] for a in done),
        "makespan_s": round(last - t0, 3) if finishes else None,
        "tasks_per_s": round(len(tasks) / (last - t0), 2) if finishes else None,
        "peak_working_tasks": peak_overlap(working),
        "per_task": {part: stats_ms(s for a in done for s in a["samples_s"][part]) for part in PARTS},
        "cpu": cpu.result,
        "slowest_execution": timeline(max(records, key=lambda r: (r.finished or math.inf) - r.created), t0)
        if records
        else None,
    }


def timeline(record: ExecutionRecord, t0: float) -> dict[str, Any]:
    """An execution's tasks, times in seconds from `t0`: to see where a slow one waited."""

    def rel(value: float | None) -> float | None:
        return round(value - t0, 3) if value is not None else None

    return {
        "execution_id": record.execution_id,
        "status": record.status,
        "created": rel(record.created),
        "finished": rel(record.finished),
        "tasks": [
            {
                "task_id": t.task_id,
                "step": t.step,
                "agent": t.agent,
                "status": t.status,
                "attempts": t.attempts,
                "created": rel(t.created),
                "queued": rel(t.queued),
                "started": rel(t.started),
                "finished": rel(t.finished),
                "model_s": round(t.model_s, 3),
            }
            for t in sorted(record.tasks, key=lambda t: (t.step, t.created))
        ],
    }


async def concurrency_phase(api: Api, db: Database, config: Config) -> list[dict[str, Any]]:
    levels: list[dict[str, Any]] = []
    for k in config.concurrency:
        print(f"  {k} executions at once, model calls {config.delay:g} s …", flush=True)
        level = await burst(api, db, k, config)
        levels.append(level)
        if level["timed_out"] or level["completed"] < level["executions_started"] or level["post_errors"]:
            print(f"  !! K={k}: {level['completed']} of {k} completed {level['statuses']}; stopping here", flush=True)
            break
    base = next((lv["completion"].get("p50_ms") for lv in levels if lv["k"] == 1), None)
    for level in levels:
        p50 = level["completion"].get("p50_ms")
        level["p50_ratio_to_k1"] = round(p50 / base, 2) if base and p50 else None
    return levels


async def measure(api: Api, env: dict[str, str], config: Config) -> dict[str, Any]:
    db = Database(env)
    try:
        print(f"  overhead: {config.warmup} warm-up, then {config.sequential} executions one after the other …")
        overhead = await overhead_phase(api, db, config)
        levels = await concurrency_phase(api, db, config) if config.concurrency else []
    finally:
        await db.close()
    return {"overhead": overhead, "concurrency": levels}


def run_mode(mode: str, config: Config, stamp: str) -> dict[str, Any]:
    print(f"== {mode} mode", flush=True)
    from app.config import load_settings

    info: dict[str, Any] = {}
    extra = {"BOTARMY_LOG_LEVEL": config.log_level}
    if config.worker_concurrency:
        extra["BOTARMY_WORKER_CONCURRENCY"] = str(config.worker_concurrency)
    with tempfile.TemporaryDirectory(prefix=f"botarmy-engine-bench-{mode}-") as workdir:
        log_dir = Path(workdir)
        processes: list[Process] = []
        with contextlib.ExitStack() as stack:
            if mode == "embedded":
                env = {**ENGINE_ENV, **extra, "BOTARMY_DATA_DIR": str(log_dir / "data")}
            else:
                env = {**stack.enter_context(services_environment(info)), **ENGINE_ENV, **extra}
            settings = load_settings(env)
            # The embedded in-process broker runs each job as soon as it is sent: nothing limits it.
            info["task_slots"] = settings.worker.concurrency if mode == "services" else None
            try:
                if mode == "services":
                    processes.append(start_worker(env, log_dir))
                token = create_admin_token(env)
                info["authenticated"] = token is not None
                api_process, base_url = start_api(env, log_dir)
                processes.append(api_process)
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                groups = {process.name: process.popen.pid for process in processes}
                results = asyncio.run(measure(Api(base_url, headers, groups), env, config))
                for process in processes:
                    if process.popen.poll() is not None:
                        raise BenchError(f"the {process.name} exited during the run:\n{process.log_tail()}")
            except BaseException:
                for process in processes:
                    print(f"--- {process.name} log (tail)\n{process.log_tail()}", file=sys.stderr)
                raise
            finally:
                for process in reversed(processes):  # before the database is dropped
                    process.stop()
                info["logs"] = {
                    process.name: keep_log(process, f"engine_bench-{stamp}-{mode}") for process in processes
                }
    return {**info, **results}


# Log events worth counting (the INFO ones only with --log-level INFO).
LOG_EVENTS = ("task_stopped", "task_crashed", "heartbeat_failed", "sweep_requeued", "task_not_claimable")
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Timeout)\b")


def keep_log(process: Process, prefix: str, limit: int = 12) -> dict[str, Any]:
    """What the process logged (at WARNING by default): what went wrong, if anything; kept in bench/results/."""
    text = process.log_path.read_text(errors="replace").splitlines()
    lines = [line for line in text if line.strip() and "][INFO" not in line]  # taskiq's start-up lines
    if not lines:
        return {"lines": 0}
    counts: dict[str, int] = {}
    for line in lines:
        if line.split(" ", 1)[0] in {"WARNING", "ERROR", "CRITICAL"} or EXCEPTION_LINE.match(line):
            counts[line[:240]] = counts.get(line[:240], 0) + 1
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    kept = RESULTS_DIR / f"{prefix}-{process.name}.log"
    shutil.copyfile(process.log_path, kept)
    top = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    events = {event: sum(event in line for line in lines) for event in LOG_EVENTS}
    return {
        "lines": len(lines),
        "kept_as": str(kept.relative_to(REPO_ROOT)),
        "events": {event: count for event, count in events.items() if count},
        "top": dict(top),
    }


# --- report ----------------------------------------------------------------------------------------------


def app_changes() -> list[str]:
    """Uncommitted changes under app/ and migrations/ (the code measured may differ from git_head)."""
    git = shutil.which("git")
    if git is None:
        return []
    done = subprocess.run(
        [git, "status", "--porcelain", "--", "app", "migrations"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return done.stdout.splitlines()


def _ms(summary: dict[str, float], key: str) -> str:
    value = summary.get(key)
    return f"{value:.1f}" if value is not None else "-"


def print_tables(results: dict[str, Any], config: Config) -> None:
    modes = [mode for mode in results if results[mode].get("overhead")]
    if modes:
        print()
        runs = ", ".join(
            f"{mode}: {results[mode]['overhead']['measured']} of {results[mode]['overhead']['executions']}"
            for mode in modes
        )
        print(f"Engine overhead, {WORKFLOW_ID}, no model delay, executions one after the other ({runs})")
        header = f"{'measure (ms)':<44}" + "".join(f"{mode + ' p50':>15}{'p95':>9}" for mode in modes)
        print(header)
        print("-" * len(header))
        rows: list[tuple[str, str, str]] = [
            ("execution wall time (per execution)", "execution_wall", ""),
            ("time in model calls (per execution)", "model_union_per_execution", ""),
            ("engine per task: (wall - model) / tasks", "engine_per_task", ""),
            ("engine per step: (wall - model) / steps", "engine_per_step", ""),
            ("created -> queued (dispatch)", "per_task", "dispatch"),
            ("queued -> started (pickup)", "per_task", "pickup"),
            ("started -> finished - model (executor)", "per_task", "executor"),
            ("previous step finished -> created (advance)", "per_task", "advance"),
            ("execution created -> first task created", "start", ""),
            ("last task finished -> execution done", "tail", ""),
        ]
        for label, key, part in rows:
            line = f"{label:<44}"
            for mode in modes:
                section = results[mode]["overhead"][key]
                summary = section[part] if part else section
                line += f"{_ms(summary, 'p50_ms'):>15}{_ms(summary, 'p95_ms'):>9}"
            print(line)
        for mode in modes:
            overhead = results[mode]["overhead"]
            path = ", ".join(f"{k} {v:g}" for k, v in overhead["critical_path_mean_ms"].items())
            print(f"  {mode}: tasks per execution {overhead['tasks_per_execution']}; critical path, mean ms: {path}")
            for stalled in overhead["stalled"]:
                what = "; ".join(
                    f"{x['agent']} {x['kind']} (created -> queued {x['dispatch_s']:.1f} s)" for x in stalled["stalls"]
                )
                print(f"  {mode}: not measured, stalled for the sweep: wall {stalled['wall_s']:.1f} s, {what}")
    levels = [(mode, level) for mode in results for level in results[mode].get("concurrency", [])]
    if levels:
        print()
        print(f"K executions started at once, every model call {config.delay:g} s (completion from the POSTs)")
        header = (
            f"{'mode':<10}{'K':>4}{'done':>6}{'tasks':>6}{'stalled':>8}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'xK=1':>6}"
            f"{'tasks/s':>9}{'peak':>6}{'pickup p95':>11}{'POST p95':>10}{'api':>6}{'worker':>8}{'pg':>5}{'other':>7}"
        )
        print(header)
        print("-" * len(header))
        for mode, level in levels:
            completion, cpu = level["completion"], level["cpu"]
            seconds = [completion.get(key, math.nan) / 1000 for key in ("p50_ms", "p95_ms", "max_ms")]
            ratio = level["p50_ratio_to_k1"]
            worker = f"{cpu['worker_cpu_percent']:>7.0f}%" if "worker_cpu_percent" in cpu else f"{'-':>8}"
            print(
                f"{mode:<10}{level['k']:>4}{level['completed']:>6}{level['tasks']:>6}{level['stalled_executions']:>8}"
                f"{seconds[0]:>8.2f}{seconds[1]:>8.2f}{seconds[2]:>8.2f}{(f'{ratio:.2f}' if ratio else '-'):>6}"
                f"{level['tasks_per_s'] or math.nan:>9.1f}{level['peak_working_tasks']:>6}"
                f"{_ms(level['per_task']['pickup'], 'p95_ms'):>11}{_ms(level['post_round_trip'], 'p95_ms'):>10}"
                f"{cpu['api_cpu_percent']:>5.0f}%{worker}{cpu['postgres_cpu_percent']:>4.0f}%{cpu['other_cpu_percent']:>6.0f}%"
            )
        print(
            "(stalled: executions with a task that waited for the sweep; peak: most tasks working at once;"
            " pickup: queued -> started, ms; CPU in % of one core)"
        )
        for mode, level in levels:
            affected, clean = level["stalled_executions"], level["completion_unstalled"]
            if affected and clean.get("count"):
                kinds = ", ".join(sorted({f"{x['agent']} {x['kind']}" for x in level["stalls"]}))
                print(
                    f"  {mode} K={level['k']}: {affected} stalled ({kinds}); without them:"
                    f" p50 {clean['p50_ms'] / 1000:.2f} s, p95 {clean['p95_ms'] / 1000:.2f} s,"
                    f" max {clean['max_ms'] / 1000:.2f} s"
                )
    for mode, result in results.items():
        for name, log in result.get("logs", {}).items():
            if log.get("lines"):
                print(f"  {mode} {name} log: {log['lines']} lines, kept as {log['kept_as']}; events {log['events']}")
                for line, count in list(log["top"].items())[:3]:
                    print(f"    {count} x {line[:160]}")
    print()


def parse_args(argv: list[str] | None) -> tuple[list[str], Config]:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "services", "both"], default="both")
    parser.add_argument("--sequential", type=int, default=10, help="executions of the overhead phase (1..50)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured executions before it (0..5)")
    parser.add_argument(
        "--concurrency", default="1,5,10,20,40", help="comma-separated K, executions at once (each 1..100; '' for none)"
    )
    parser.add_argument("--delay", type=float, default=0.5, help="seconds per model call in the concurrency phase")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=None,
        help="BOTARMY_WORKER_CONCURRENCY for the worker (services mode; default: the app's, 10)",
    )
    parser.add_argument(
        "--idle-wait", type=float, default=20.0, help="before each phase, wait up to this long for an idle machine"
    )
    parser.add_argument(
        "--log-level",
        choices=["WARNING", "INFO"],
        default="WARNING",
        help="the app's log level (INFO for diagnosis: every job and task transition is logged, at a cost)",
    )
    args = parser.parse_args(argv)
    concurrency = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    if not all(1 <= c <= 100 for c in concurrency):
        parser.error("--concurrency: 1..100 each")
    if not 1 <= args.sequential <= 50 or not 0 <= args.warmup <= 5:
        parser.error("--sequential 1..50, --warmup 0..5")
    if not 0 < args.delay <= 10:
        parser.error("--delay: 0 < seconds <= 10")
    if args.worker_concurrency is not None and not 1 <= args.worker_concurrency <= 1000:
        parser.error("--worker-concurrency: 1..1000")
    if not 0 <= args.idle_wait <= 600:
        parser.error("--idle-wait: 0..600")
    modes = ["embedded", "services"] if args.mode == "both" else [args.mode]
    config = Config(
        args.sequential, args.warmup, concurrency, args.delay, args.worker_concurrency, args.idle_wait, args.log_level
    )
    return modes, config


def main(argv: list[str] | None = None) -> int:
    modes, config = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.datetime.now(datetime.UTC)
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for mode in modes:
        try:
            results[mode] = run_mode(mode, config, started.strftime("%Y%m%dT%H%M%SZ"))
        except Exception as exc:
            failures[mode] = str(exc) or repr(exc)
            print(f"!! {mode} mode failed: {exc}", file=sys.stderr)
    print_tables(results, config)
    report = {
        "benchmark": "engine_bench",
        "started_at": started.isoformat(),
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "machine": machine(),
        "git_head": git_head(),
        "uncommitted_app_changes": app_changes(),
        "config": asdict(config),
        "workflow_id": WORKFLOW_ID,
        "idea": IDEA,
        "env": ENGINE_ENV,
        "results": results,
        "failures": failures,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"engine_bench-{'-'.join(modes)}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {path.relative_to(REPO_ROOT)}")
    incomplete = any(
        level["completed"] < level["k"] for result in results.values() for level in result.get("concurrency", [])
    )
    return 1 if failures or incomplete else 0


if __name__ == "__main__":
    sys.exit(main())

"""What the worker and database drills need: a database and Redis namespace of their own, processes, and the audit.

The processes and the database set-up are the tests' own (tests/helpers.py, tests/conftest.py), so
that a drill runs exactly what the quick versions in tests/ run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import func, select

from app.config import load_settings
from app.db.engine import build_db_config, upgrade_database
from app.events.models import Event
from app.tasks.models import AgentTask, TaskStatus
from app.tasks.state import TASK_MOVES
from tests.conftest import REDIS_TEST_URL, create_pg_database, drop_pg_database, drop_redis_namespace, require_services
from tests.helpers import Process

DRILL_ENV = {
    "BOTARMY_LOG_LEVEL": "INFO",
    "BOTARMY_MODEL_RETRY_DELAYS": "0.1,0.2,0.4",
    "BOTARMY_PROGRESS_INTERVAL_SECONDS": "1",
    "BOTARMY_SWEEP_INTERVAL_SECONDS": "0.5",
    "BOTARMY_TASK_LEASE_SECONDS": "3",
    "BOTARMY_PENDING_REQUEUE_SECONDS": "1",
    "BOTARMY_QUEUED_REQUEUE_SECONDS": "5",
    "BOTARMY_RATE_LIMIT_PER_MINUTE": "1000000",
}


@contextlib.contextmanager
def services(name: str, extra: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """A migrated PostgreSQL database and a Redis namespace of this drill's own, removed afterwards."""
    require_services()
    suffix = uuid.uuid4().hex[:8]
    db_name, namespace = f"botarmy_drill_{name}_{suffix}", f"botarmy-drill-{name}-{suffix}"
    url = create_pg_database(db_name)
    env = {**DRILL_ENV, **(extra or {}), "DATABASE_URL": url, "REDIS_URL": REDIS_TEST_URL}
    env["BOTARMY_REDIS_NAMESPACE"] = namespace
    try:
        upgrade_database(load_settings(env).db)
        yield env
    finally:
        drop_pg_database(db_name)
        drop_redis_namespace(namespace)


async def wait_for_log(process: Process, text: str, within: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while text not in process.log():
        if process.popen.poll() is not None or asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"no {text!r} in {process.log_path}:\n{process.log()[-2000:]}")
        await asyncio.sleep(0.1)


def say(message: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
    print(f"[{stamp}] {message}", flush=True)


@dataclass
class Audit:
    """What the event log and the task table say about a set of tasks."""

    tasks: int = 0
    completed: int = 0
    problems: list[str] = field(default_factory=list)
    requeued_lost: int = 0
    handed_back: int = 0
    attempts: int = 0
    out_of_order: int = 0  # tasks whose events are not in order

    @property
    def ok(self) -> bool:
        return not self.problems


CLAIMED = "working"  # the message of the event that starts an attempt (`TaskLeases.claim`)


def order_problems(task: AgentTask, rows: list[tuple[int, str, datetime.datetime, dict[str, Any]]]) -> list[str]:
    """What is out of order in one task's story, told by its events in id order.

    `task_created` comes first; every later status is a move the task's table allows from the one
    before (`app.tasks.state.TASK_MOVES`: no `working` after `completed`, no attempt that skips being
    queued or claimed); nothing follows the completion; one claim per attempt the row counts; and
    the events' times never go back. Each of the task's transitions updates its row first, so they
    commit one after another, and ids are given in commit order: a time going back means ids are not.
    """
    story = [row for row in rows if row[1] in {"task_created", "task_progress_updated"}]
    problems: list[str] = []
    if not story or story[0][1] != "task_created":
        return [f"task {task.id}: its first event is {story[0][1] if story else 'missing'}, not task_created"]
    status, claims, finished_at = TaskStatus.PENDING, 0, None
    for (event_id, _, at, data), (before_id, _, before_at, _) in zip(story[1:], story, strict=False):
        if finished_at is not None:
            problems.append(f"task {task.id}: event {event_id} after its completion (event {finished_at})")
        if at < before_at:
            problems.append(f"task {task.id}: event {event_id} is older than event {before_id} before it")
        new_status = TaskStatus(data["status"])
        if not TASK_MOVES.allows(status, new_status):
            problems.append(f"task {task.id}: event {event_id} moves it from {status} to {new_status}")
        claims += data.get("message") == CLAIMED
        if new_status == TaskStatus.COMPLETED:
            finished_at = event_id
        status = new_status
    if claims != task.attempts:
        problems.append(f"task {task.id}: {claims} attempts started in its events, {task.attempts} on its row")
    return problems


async def audit(env: dict[str, str], task_ids: list[str]) -> Audit:
    """Every task completed, exactly once (one `completed` event), and its events in order (`order_problems`)."""
    config = build_db_config(load_settings(env).db)
    result = Audit(tasks=len(task_ids))
    try:
        async with config.get_session() as session:
            for task_id in task_ids:
                task = await session.get(AgentTask, uuid.UUID(task_id))
                if task is None:
                    result.problems.append(f"task {task_id} was accepted (201) but is not stored")
                    continue
                rows = [
                    row._tuple()
                    for row in await session.execute(
                        select(Event.id, Event.event_type, Event.created_at, Event.data)
                        .where(Event.task_id == task.id)
                        .order_by(Event.id)
                    )
                ]
                progress = [data for _, event_type, _, data in rows if event_type == "task_progress_updated"]
                completions = sum(1 for data in progress if data.get("status") == "completed")
                messages = [data.get("message") for data in progress]
                result.requeued_lost += messages.count("worker lost; requeued")
                result.handed_back += messages.count("worker stopping; handed back")
                result.attempts += task.attempts
                out_of_order = order_problems(task, rows)
                result.out_of_order += bool(out_of_order)
                result.problems += out_of_order
                if task.status != "completed":
                    result.problems.append(f"task {task_id} is {task.status}, not completed")
                elif completions != 1:
                    result.problems.append(f"task {task_id} completed {completions} times")
                else:
                    result.completed += 1
            stray = await session.scalar(select(func.count()).select_from(AgentTask))
            if stray is not None and stray > len(task_ids):
                result.problems.append(f"{stray - len(task_ids)} task(s) stored that no 201 answer announced")
    finally:
        await config.get_engine().dispose()
    return result


async def event_times(env: dict[str, str], message: str) -> list[tuple[str, datetime.datetime]]:
    """(task id, time) of every `task_progress_updated` event with this message, in order."""
    config = build_db_config(load_settings(env).db)
    try:
        async with config.get_session() as session:
            statement = (
                select(Event.task_id, Event.created_at)
                .where(Event.event_type == "task_progress_updated", Event.data["message"].as_string() == message)
                .order_by(Event.id)
            )
            return [(str(task_id), at) for task_id, at in await session.execute(statement)]
    finally:
        await config.get_engine().dispose()


async def submit(client: httpx.AsyncClient, project_id: str, instructions: str) -> str | None:
    """A task's id when the api accepted it (201); None when it refused (and stored nothing)."""
    response = await client.post(
        f"/api/v1/projects/{project_id}/tasks", json={"agent_type": "coder", "instructions": instructions}
    )
    if response.status_code == 201:
        task_id: str = response.json()["task_id"]
        return task_id
    return None


async def wait_all_done(client: httpx.AsyncClient, task_ids: list[str], within: float) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    remaining = set(task_ids)
    while remaining and asyncio.get_running_loop().time() < deadline:
        for task_id in list(remaining):
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"/api/v1/tasks/{task_id}")
                body: dict[str, Any] = response.json() if response.status_code == 200 else {}
                if body.get("status") in {"completed", "failed", "cancelled"}:
                    remaining.discard(task_id)
        await asyncio.sleep(0.5)
    return not remaining


def report(title: str, rows: list[tuple[str, str]], result: Audit) -> int:
    print(f"\n{title}")
    for name, value in rows:
        print(f"  {name:<40} {value}")
    print(f"  {'tasks completed exactly once':<40} {result.completed}/{result.tasks}")
    print(f"  {'tasks with events out of order':<40} {result.out_of_order}")
    for problem in result.problems[:20]:
        print(f"  PROBLEM: {problem}")
    print("  RESULT: " + ("ok" if result.ok else f"FAILED ({len(result.problems)} problems)"))
    return 0 if result.ok else 1

"""A `botarmy worker` stopped by SIGTERM or SIGINT mid-work: it exits 0 within its grace period,
what finishes in time completes, and what cannot is handed back and run by another worker at
once, long before its lease would have run out."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select

from app.config import load_settings
from app.db.engine import build_db_config
from app.events.models import Event
from tests.helpers import Process, app_client, start_worker, task_status, wait_for_task

GRACE_SECONDS = 5.0  # running attempts go on for 2.5 s of it
# Far beyond the test: a task that comes back sooner was handed back, not found by the sweep.
LEASE_SECONDS = 60


@pytest.fixture
def shutdown_env(own_services_env: dict[str, str]) -> dict[str, str]:
    return {
        **own_services_env,
        "BOTARMY_WORKER_GRACE_SECONDS": str(GRACE_SECONDS),
        "BOTARMY_TASK_LEASE_SECONDS": str(LEASE_SECONDS),
        "BOTARMY_LOG_LEVEL": "INFO",
    }


async def wait_for_log(worker: Process, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log():
        assert worker.popen.poll() is None, worker.log()
        assert time.monotonic() < deadline, f"no {text!r} in the worker's log:\n{worker.log()}"
        await asyncio.sleep(0.05)


async def stop_supervisor(worker: Process, signum: signal.Signals) -> tuple[int, float]:
    """Signal the supervisor only (as `podman stop` does PID 1): its exit code and how long it took."""
    started = time.monotonic()
    worker.popen.send_signal(signum)
    try:
        code = await asyncio.to_thread(worker.popen.wait, GRACE_SECONDS + 10)
    except subprocess.TimeoutExpired:
        worker.kill()
        pytest.fail(f"the worker did not exit on {signum.name}:\n{worker.log()}")
    return code, time.monotonic() - started


async def submit(client: AsyncClient, project_id: str, delay: float) -> str:
    response = await client.post(
        f"/api/v1/projects/{project_id}/tasks",
        json={"agent_type": "coder", "instructions": f"work [[offline:delay={delay}]]"},
    )
    assert response.status_code == 201, response.text
    task_id: str = response.json()["task_id"]
    return task_id


async def event_counts(database_url_env: dict[str, str], task_id: str) -> tuple[int, int]:
    """How many times the task completed, and how many times it was handed back."""
    config = build_db_config(load_settings(database_url_env).db)
    try:
        async with config.get_session() as session:
            of_task = select(func.count()).select_from(Event).where(Event.task_id == uuid.UUID(task_id))
            completed = await session.scalar(of_task.where(Event.data["status"].as_string() == "completed"))
            handed = await session.scalar(
                of_task.where(Event.data["message"].as_string() == "worker stopping; handed back")
            )
    finally:
        await config.get_engine().dispose()
    return int(completed or 0), int(handed or 0)


async def test_sigterm_finishes_what_it_can_and_hands_back_the_rest(
    shutdown_env: dict[str, str], tmp_path: Path
) -> None:
    settings = load_settings(shutdown_env)
    first = start_worker(shutdown_env, tmp_path / "first.log")
    second = start_worker(shutdown_env, tmp_path / "second.log")
    try:
        await wait_for_log(first, "worker_started")
        await wait_for_log(second, "worker_started")
        # The second worker is frozen while the first takes both tasks (its last blocking read of
        # the queue ends within a second), and thawed when the first is told to stop.
        os.killpg(second.popen.pid, signal.SIGSTOP)
        await asyncio.sleep(1.5)
        async with app_client(settings) as client:
            project = (await client.post("/api/v1/projects", json={"name": "sigterm"})).json()
            short = await submit(client, project["id"], 2)  # ends within the grace period
            long = await submit(client, project["id"], 5)  # cannot
            await wait_for_task(client, short, "working", timeout=30)
            await wait_for_task(client, long, "working", timeout=30)

            os.killpg(second.popen.pid, signal.SIGCONT)
            code, took = await stop_supervisor(first, signal.SIGTERM)
            assert code == 0, first.log()
            assert took < GRACE_SECONDS + 2, (took, first.log())
            done = await task_status(client, short)
            assert (done["status"], done["attempts"]) == ("completed", 1)
            # Handed back and taken by the second worker at once, not after the lease ran out.
            done = await wait_for_task(client, long, "completed", timeout=15)
            assert done["attempts"] == 2
    finally:
        first.kill()
        second.stop()
    assert await event_counts(shutdown_env, short) == (1, 0)
    assert await event_counts(shutdown_env, long) == (1, 1)


async def test_sigint_hands_back_a_running_task(shutdown_env: dict[str, str], tmp_path: Path) -> None:
    settings = load_settings(shutdown_env)
    worker = start_worker(shutdown_env, tmp_path / "worker.log")
    try:
        await wait_for_log(worker, "worker_started")
        async with app_client(settings) as client:
            project = (await client.post("/api/v1/projects", json={"name": "sigint"})).json()
            task_id = await submit(client, project["id"], 30)
            await wait_for_task(client, task_id, "working", timeout=30)

            code, took = await stop_supervisor(worker, signal.SIGINT)
            assert code == 0, worker.log()
            assert took < GRACE_SECONDS + 2, (took, worker.log())
            task = await task_status(client, task_id)
            assert task["status"] == "queued", task  # back in the queue, not left working under a lease
            agents = (await client.get("/api/v1/agents/status", params={"project_id": project["id"]})).json()
    finally:
        worker.kill()
    assert await event_counts(shutdown_env, task_id) == (0, 1)
    coder = next(agent for agent in agents["items"] if agent["agent_type"] == "coder")
    assert coder["status"] == "idle"

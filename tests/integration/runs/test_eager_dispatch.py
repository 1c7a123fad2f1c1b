"""A worker with a slot to spare runs one follow-up of the task it finished itself, without a job.

Each task still runs once; a worker whose slots are all needed queues every follow-up; a worker
killed while it runs a kept task leaves it to another worker, as any attempt.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from app.config import load_settings
from app.db.engine import build_db_config
from app.tasks.models import AgentTask
from tests.conftest import free_port
from tests.helpers import Process, cli_token, start_server, start_worker


@pytest.fixture
def eager_env(own_services_env: dict[str, str]) -> dict[str, str]:
    return {
        **own_services_env,
        "BOTARMY_LOG_LEVEL": "INFO",
        "BOTARMY_TASK_LEASE_SECONDS": "2",
        "BOTARMY_SWEEP_INTERVAL_SECONDS": "0.5",
    }


async def run_workflow(env: dict[str, str], tmp_path: Path, idea: str, *, kill_mid_step: bool = False) -> str:
    """Run botarmy-sdlc to its end on one worker (killed once mid-step and replaced, if asked); its project id."""
    port = free_port()
    server = start_server(env, port, tmp_path / "api.log")
    workers: list[Process] = [start_worker(env, tmp_path / "worker-1.log")]
    headers = {"Authorization": f"Bearer {cli_token(env)}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=20) as client:
            project = (await client.post("/api/v1/projects", json={"name": "eager", "oversight_level": "low"})).json()
            started = await client.post(
                "/api/v1/executions",
                json={"project_id": project["id"], "workflow_id": "botarmy-sdlc", "inputs": {"idea": idea}},
            )
            assert started.status_code == 202, started.text
            execution_url = f"/api/v1/executions/{started.json()['id']}"
            killed = not kill_mid_step
            async with asyncio.timeout(90):
                while (body := (await client.get(execution_url)).json())["status"] != "completed":
                    assert body["status"] == "running", body
                    runs = [run for step in body["steps"][1:] for run in step["runs"]]
                    if not killed and any(run["task_status"] == "working" for run in runs):
                        # A task after the first step: one this worker kept for itself.
                        workers[0].kill()
                        workers.append(start_worker(env, tmp_path / "worker-2.log"))
                        killed = True
                    await asyncio.sleep(0.05)
            return str(project["id"])
    finally:
        for process in (server, *workers):
            process.stop()


async def stored_tasks(env: dict[str, str], project_id: str) -> list[AgentTask]:
    config = build_db_config(load_settings(env).db)
    try:
        async with config.get_session() as session:
            query = select(AgentTask).where(AgentTask.project_id == uuid.UUID(project_id)).order_by(AgentTask.id)
            return list(await session.scalars(query))
    finally:
        await config.get_engine().dispose()


async def jobs_sent(env: dict[str, str]) -> int:
    """Messages ever added to the job stream (acknowledged ones stay in it; it is never trimmed)."""
    async with Redis.from_url(env["REDIS_URL"]) as redis:
        return int(await redis.xlen(f"{env['BOTARMY_REDIS_NAMESPACE']}:jobs"))


async def test_a_follow_up_runs_on_the_worker_that_made_it_without_a_job(
    eager_env: dict[str, str], tmp_path: Path
) -> None:
    project_id = await run_workflow(eager_env, tmp_path, "A ledger for a bakery's flour orders.")
    tasks = await stored_tasks(eager_env, project_id)
    steps = [str(task.step_id) for task in tasks]
    assert sorted(set(steps)) == [str(n) for n in range(6)], steps
    assert all(task.status == "completed" and task.attempts == 1 for task in tasks)
    # The first task's job came from the api; each later step's first task was kept by the worker
    # that finished the step before (a free slot each time): five steps, five jobs fewer.
    assert await jobs_sent(eager_env) == len(tasks) - 5
    kept = (tmp_path / "worker-1.log").read_text().count("task_kept")
    assert kept == 5


async def test_a_worker_without_a_slot_to_spare_queues_every_follow_up(
    eager_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**eager_env, "BOTARMY_WORKER_CONCURRENCY": "1"}
    project_id = await run_workflow(env, tmp_path, "A ledger for a bakery's flour orders.")
    tasks = await stored_tasks(env, project_id)
    assert all(task.status == "completed" and task.attempts == 1 for task in tasks)
    assert await jobs_sent(env) == len(tasks)
    assert "task_kept" not in (tmp_path / "worker-1.log").read_text()


async def test_a_kept_task_of_a_killed_worker_is_finished_once_by_another(
    eager_env: dict[str, str], tmp_path: Path
) -> None:
    project_id = await run_workflow(
        eager_env, tmp_path, "A ledger for a bakery's flour orders. [[offline:delay=1]]", kill_mid_step=True
    )
    tasks = await stored_tasks(eager_env, project_id)
    assert all(task.status == "completed" for task in tasks)
    # One task a step (a run per task of the plan), none written twice; the one killed ran again.
    assert sorted(task.attempts for task in tasks)[-1] == 2
    assert sum(task.attempts for task in tasks) == len(tasks) + 1
    assert len({(task.step_id, task.instructions) for task in tasks}) == len(tasks)

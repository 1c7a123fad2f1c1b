"""Kill the api and the worker in the middle of an execution: started again, it completes, each step once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.artifacts.models import Artifact
from app.config import load_settings
from app.db.engine import build_db_config
from app.tasks.models import AgentTask
from tests.conftest import free_port
from tests.helpers import Process, Server, cli_token, start_server, start_worker


@pytest.fixture
def crash_env(own_services_env: dict[str, str]) -> dict[str, str]:
    return {**own_services_env, "BOTARMY_TASK_LEASE_SECONDS": "2", "BOTARMY_SWEEP_INTERVAL_SECONDS": "0.5"}


async def execution(client: httpx.AsyncClient, execution_id: str) -> dict[str, object]:
    body: dict[str, object] = (await client.get(f"/api/v1/executions/{execution_id}")).json()
    return body


async def wait_until(client: httpx.AsyncClient, execution_id: str, done_steps: int, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while True:
            body = await execution(client, execution_id)
            steps = body["steps"]
            assert isinstance(steps, list)
            if sum(1 for step in steps if step["status"] == "completed") >= done_steps:
                return
            await asyncio.sleep(0.1)


async def test_killed_api_and_worker_mid_execution(crash_env: dict[str, str], tmp_path: Path) -> None:
    token = cli_token(crash_env)
    headers = {"Authorization": f"Bearer {token}"}
    port = free_port()

    def api(name: str) -> Server:
        return start_server(crash_env, port, tmp_path / f"{name}.log")

    processes: dict[str, Server | Process] = {}
    processes["server"], processes["worker"] = api("api-1"), start_worker(crash_env, tmp_path / "worker-1.log")

    def restart_worker(name: str) -> None:
        processes["worker"].kill()
        processes["worker"] = start_worker(crash_env, tmp_path / f"{name}.log")

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=20) as client:
            project = (await client.post("/api/v1/projects", json={"name": "crash", "oversight_level": "low"})).json()
            started = await client.post(
                "/api/v1/executions",
                json={
                    "project_id": project["id"],
                    "workflow_id": "botarmy-sdlc",
                    "inputs": {"idea": "A ledger [[offline:delay=1.5]]"},
                },
            )
            assert started.status_code == 202, started.text
            execution_id = started.json()["id"]

            # 1: kill the worker while a step's model call runs.
            await wait_until(client, execution_id, 1)
            restart_worker("worker-2")
            # 2: kill the api and the worker together, later in the run.
            await wait_until(client, execution_id, 3)
            processes["server"].kill()
            restart_worker("worker-3")
            processes["server"] = api("api-2")
            # 3: kill the worker right after a step finished (between its completion and the next step's start).
            await wait_until(client, execution_id, 4)
            restart_worker("worker-4")
            async with asyncio.timeout(90):
                while (body := await execution(client, execution_id))["status"] != "completed":
                    assert body["status"] == "running", body
                    await asyncio.sleep(0.2)
    finally:
        for process in processes.values():
            process.stop()

    config = build_db_config(load_settings(crash_env).db)
    try:
        async with config.get_session() as session:
            project_id = uuid.UUID(project["id"])
            steps = list(
                await session.execute(
                    select(AgentTask.step_id, func.count())
                    .where(AgentTask.project_id == project_id)
                    .group_by(AgentTask.step_id)
                )
            )
            documents = list(
                await session.execute(
                    select(AgentTask.step_id, func.count(Artifact.id))
                    .join(Artifact, Artifact.task_id == AgentTask.id)
                    .where(AgentTask.project_id == project_id, Artifact.granularity == "document")
                    .group_by(AgentTask.step_id)
                )
            )
    finally:
        await config.get_engine().dispose()
    assert sorted((step, count) for step, count in steps) == [(str(n), 1) for n in range(6)]  # one task a step
    # Each step's documents were written once: the six agents write 2, 2, 2, 1, 1 and 2.
    assert sorted((step, count) for step, count in documents) == [
        ("0", 2),
        ("1", 2),
        ("2", 2),
        ("3", 1),
        ("4", 1),
        ("5", 2),
    ]

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
from app.hitl.models import HitlRequest
from app.tasks.models import AgentTask
from tests.conftest import free_port
from tests.helpers import Process, Server, cli_token, eventually, start_server, start_worker


@pytest.fixture
def crash_env(own_services_env: dict[str, str]) -> dict[str, str]:
    return {**own_services_env, "BOTARMY_TASK_LEASE_SECONDS": "2", "BOTARMY_SWEEP_INTERVAL_SECONDS": "0.5"}


async def execution(client: httpx.AsyncClient, execution_id: str) -> dict[str, object]:
    body: dict[str, object] = (await client.get(f"/api/v1/executions/{execution_id}")).json()
    return body


async def approve_interrupted_deploy(client: httpx.AsyncClient) -> None:
    pending = (await client.get("/api/v1/hitl/pending")).json()["items"]
    assert all(item["kind"] == "task_failure" for item in pending), pending
    for item in pending:
        request = (await client.get(f"/api/v1/hitl/{item['request_id']}")).json()
        assert request["step_id"] == "interrupted:5", request  # only the deployer acts outside
        answered = await client.post(f"/api/v1/hitl/{item['request_id']}/respond", json={"action": "approve"})
        assert answered.status_code in (200, 409), answered.text


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
                    if body["status"] == "waiting_for_hitl":
                        # On a slow machine the last kill can land mid-deploy: at most once, the
                        # deployer then waits for a person, who lets it run again.
                        await approve_interrupted_deploy(client)
                    else:
                        assert body["status"] == "running", body["steps"]
                    await asyncio.sleep(0.2)
            steps = body["steps"]
            assert isinstance(steps, list)
            coder_runs = len(steps[3]["runs"])  # one per task of the plan, in parallel
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
    # One task a step (a run of the coder's a task of the plan), never a second one after a crash.
    assert coder_runs > 1
    runs = [1, 1, 1, coder_runs, 1, 1]
    assert sorted((step, count) for step, count in steps) == [(str(n), runs[n]) for n in range(6)]
    # Each step's documents were written once: the six agents write 2, 2, 2, 1 (a run), 1 and 2.
    written = [2, 2, 2, coder_runs, 1, 2]
    assert sorted((step, count) for step, count in documents) == [(str(n), written[n]) for n in range(6)]


DEPLOY_ONCE = """
workflow:
  id: deploy-once
  name: Deploy once
  sequence:
    - agent: deployer
      phase: launch
      creates: [deployment_package, deployment_log]
      side_effects: true
"""


async def test_a_step_with_side_effects_is_put_to_a_human_after_a_crash(
    crash_env: dict[str, str], tmp_path: Path
) -> None:
    """At most once: a deploy interrupted by a crash is not rerun blindly; the human decides."""
    (tmp_path / "bmad" / "workflows").mkdir(parents=True)
    (tmp_path / "bmad" / "workflows" / "deploy-once.yaml").write_text(DEPLOY_ONCE)
    env = {**crash_env, "BOTARMY_BMAD_DIR": str(tmp_path / "bmad")}
    headers = {"Authorization": f"Bearer {cli_token(env)}"}
    port = free_port()
    server = start_server(env, port, tmp_path / "api.log")
    workers = [start_worker(env, tmp_path / "worker-1.log")]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=20) as client:
            execution_ids = []
            for name in ("approved", "rejected"):
                project = (await client.post("/api/v1/projects", json={"name": name})).json()
                started = await client.post(
                    "/api/v1/executions",
                    json={
                        "project_id": project["id"],
                        "workflow_id": "deploy-once",
                        "inputs": {"idea": "Ship it [[offline:delay=5]]"},
                    },
                )
                assert started.status_code == 202, started.text
                execution_ids.append(started.json()["id"])

            async def run_statuses() -> list[str]:
                bodies = [await execution(client, execution_id) for execution_id in execution_ids]
                return [body["steps"][0]["runs"][0]["task_status"] for body in bodies]  # type: ignore[index]

            await eventually(run_statuses, lambda statuses: statuses == ["working", "working"], timeout=30)
            workers[0].kill()  # mid-deploy: part of it may have happened
            workers.append(start_worker(env, tmp_path / "worker-2.log"))
            parked = ["waiting_for_hitl", "waiting_for_hitl"]
            await eventually(run_statuses, lambda statuses: statuses == parked, timeout=30, interval=0.2)
            for execution_id in execution_ids:
                assert (await execution(client, execution_id))["status"] == "waiting_for_hitl"

            config = build_db_config(load_settings(env).db)
            try:
                async with config.get_session() as session:
                    tasks = list(await session.scalars(select(AgentTask).order_by(AgentTask.id)))
                    requests = {
                        request.task_id: request
                        for request in await session.scalars(
                            select(HitlRequest).where(HitlRequest.kind == "task_failure")
                        )
                    }
            finally:
                await config.get_engine().dispose()
            assert [(task.at_most_once, task.attempts) for task in tasks] == [(True, 1), (True, 1)]  # not rerun
            approve, reject = (requests[task.id] for task in tasks)
            assert "interrupted" in approve.question and approve.options == ["approve", "reject"]

            answered = await client.post(f"/api/v1/hitl/{approve.id}/respond", json={"action": "approve"})
            assert answered.status_code == 200, answered.text
            declined = await client.post(
                f"/api/v1/hitl/{reject.id}/respond", json={"action": "reject", "comment": "rolled back by hand"}
            )
            assert declined.status_code == 200, declined.text
            async with asyncio.timeout(30):
                while (done := await execution(client, execution_ids[0]))["status"] != "completed":
                    assert done["status"] in ("running", "waiting_for_hitl"), done
                    await asyncio.sleep(0.2)
            failed = await execution(client, execution_ids[1])
            assert failed["status"] == "failed"
            assert "rolled back by hand" in str(failed["error"])
    finally:
        for process in [server, *workers]:
            process.stop()

    config = build_db_config(load_settings(env).db)
    try:
        async with config.get_session() as session:
            tasks = list(await session.scalars(select(AgentTask).order_by(AgentTask.id)))
            documents = await session.scalar(
                select(func.count(Artifact.id)).where(
                    Artifact.task_id == tasks[0].id, Artifact.granularity == "document"
                )
            )
    finally:
        await config.get_engine().dispose()
    assert [(task.status, task.attempts) for task in tasks] == [("completed", 2), ("failed", 1)]
    assert documents == 2  # the approved rerun wrote the package and the log, once

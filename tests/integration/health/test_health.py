"""Health endpoints, and failing closed when PostgreSQL or Redis goes away (and recovering)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
from httpx import AsyncClient

from app.config import load_settings
from tests.conftest import FAST_ENV, free_port
from tests.helpers import (
    NO_PROBLEMS,
    Tally,
    TcpProxy,
    app_client,
    eventually,
    follow,
    start_server,
    start_worker,
    table_ids,
    wait_for_task,
)


async def test_health_endpoints_report_every_component(client: AsyncClient, mode: str) -> None:
    answer = await client.get("/health")  # answered at the app's door (`LivenessAnswer`)
    live = answer.json()
    assert live["status"] == "ok" and live["service"] == "botarmy" and live["version"]
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.content)
    # Only GET /health is answered there: the rest goes through the app as before.
    assert (await client.post("/health")).status_code == 405
    assert (await client.get("/health/")).status_code == 200

    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["failing"] == []

    detailed = (await client.get("/health/detailed")).json()
    assert detailed["status"] == "healthy"
    assert set(detailed["components"]) == {"database", "schema", "broker", "channels"}
    database = detailed["components"]["database"]
    assert database["healthy"] and database["latency_ms"] >= 0
    assert database["backend"] == ("sqlite" if mode == "embedded" else "postgresql")
    assert detailed["components"]["broker"]["backend"] == ("in-process" if mode == "embedded" else "redis")

    z = (await client.get("/health/z")).json()
    assert z == {
        "status": "healthy",
        "health_percentage": 100.0,
        "checks": dict.fromkeys(("database", "schema", "broker", "channels"), "pass"),
    }


async def test_database_down_fails_closed_and_recovers(own_services_env: dict[str, str]) -> None:
    """PostgreSQL behind a proxy we can cut: 503 naming the database while it is gone, then back."""
    proxy = TcpProxy(target_port=5432, listen_port=free_port())
    proxy.start()
    database = own_services_env["DATABASE_URL"].rsplit("/", 1)[1]
    env = {
        **FAST_ENV,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{proxy.listen_port}/{database}",
        "BOTARMY_DB_CONNECT_TIMEOUT": "2",
    }
    settings = load_settings(env)
    async with app_client(settings) as client:
        assert (await client.get("/health/ready")).status_code == 200
        project = (await client.post("/api/v1/projects", json={"name": "survives"})).json()

        proxy.stop()
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["failing"] == ["database"]
        # Tokens are checked against the database: every authenticated route answers 503 while it is away.
        for path in ("/health/z", f"/api/v1/projects/{uuid.uuid4()}"):
            gone = await client.get(path)
            assert gone.status_code == 503, (path, gone.text)
            assert gone.headers["Retry-After"] == "5"
        response = await client.get(f"/api/v1/projects/{uuid.uuid4()}")
        assert response.status_code == 503
        assert "database" in response.json()["detail"]
        assert "Traceback" not in response.text and "postgres" not in response.text

        proxy.start()
        for _ in range(50):
            if (await client.get("/health/ready")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await client.get("/health/ready")).status_code == 200
        # Pooled connections that died with the proxy are replaced, not handed out; nothing was lost.
        assert (await client.get(f"/api/v1/projects/{project['id']}")).json() == project
    proxy.stop()


async def test_redis_down_refuses_tasks_but_keeps_them(embedded_env: dict[str, str]) -> None:
    """With the broker unreachable a submitted task is stored as pending and the answer is 503."""
    dead_port = free_port()
    env = {**embedded_env, "REDIS_URL": f"redis://127.0.0.1:{dead_port}/0"}
    settings = load_settings(env)
    async with app_client(settings) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["failing"] == ["broker"]
        assert (await client.get("/health/z")).json()["status"] == "unhealthy"
        project = (await client.post("/api/v1/projects", json={"name": "no queue"})).json()
        response = await client.post(
            f"/api/v1/projects/{project['id']}/tasks", json={"agent_type": "coder", "instructions": "x"}
        )
        assert response.status_code == 503, response.text
        assert "pending" in response.json()["detail"]
        task_id = response.json()["extra"]["task_id"]
        task = await client.get(f"/api/v1/tasks/{task_id}")
        assert task.status_code == 200, task.text
        assert task.json()["status"] == "pending"


async def test_redis_outage_and_return_a_task_submitted_meanwhile_completes(
    own_services_env: dict[str, str], tmp_path: Path
) -> None:
    """Redis behind a proxy we cut: the api refuses with 503 and keeps the task; when Redis is back
    the api, the worker and the live stream reconnect by themselves and the task is done. Stream
    clients across the outage, one staying connected and one resuming with `after=` every few
    events, have every event of the project once, in order."""
    proxy = TcpProxy(target_port=6379, listen_port=free_port())
    proxy.start()
    database = own_services_env["REDIS_URL"].rsplit("/", 1)[1]
    env = {**own_services_env, "REDIS_URL": f"redis://127.0.0.1:{proxy.listen_port}/{database}"}
    port = free_port()
    worker = start_worker(env, tmp_path / "worker.log")
    server = start_server(env, port, tmp_path / "api.log")
    steady, resuming, stop_reading = Tally(), Tally(), asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as client:
            project = (await client.post("/api/v1/projects", json={"name": "redis blips"})).json()
            path = f"/api/v1/projects/{project['id']}/tasks"
            before = (await client.post(path, json={"agent_type": "coder", "instructions": "before"})).json()
            await wait_for_task(client, before["task_id"], "completed", timeout=30)

            def stream() -> str:
                return server.ws_url(f"/ws/projects/{project['id']}")

            readers = [
                asyncio.create_task(follow(stream, steady, stop_reading, after=0)),
                asyncio.create_task(follow(stream, resuming, stop_reading, after=0, drop_every=2)),
            ]
            await eventually(lambda: asyncio.sleep(0, min(steady.connections, resuming.connections)), bool)
            proxy.stop()
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["failing"] == ["broker"]
            during = await client.post(path, json={"agent_type": "coder", "instructions": "during"})
            assert during.status_code == 503, during.text
            task_id = during.json()["extra"]["task_id"]

            proxy.start()
            await eventually(lambda: client.get("/health/ready"), lambda r: r.status_code == 200, timeout=20)
            # The worker's sweep queues the pending task; the worker runs it.
            done = await wait_for_task(client, task_id, "completed", timeout=60)
            assert done["attempts"] == 1

            after = (await client.post(path, json={"agent_type": "coder", "instructions": "after"})).json()
            await wait_for_task(client, after["task_id"], "completed", timeout=30)
            # The api's events (created, queued) and the worker's (working, completed) reach the
            # streams in id order, also just after the outage (the hub orders them, and reads what
            # Redis lost from the table): both clients match the event table.
            expected = await table_ids(env, project["id"])

            async def lowest_last() -> int:
                return min(steady.last, resuming.last)

            await eventually(lowest_last, lambda last: last >= expected[-1])
            stop_reading.set()
            await asyncio.gather(*readers)
    finally:
        stop_reading.set()
        server.stop()
        worker.stop()
        proxy.stop()
    assert steady.problems(expected) == NO_PROBLEMS
    assert resuming.problems(expected) == NO_PROBLEMS
    assert steady.connections == 1  # it stayed connected through the outage
    assert resuming.connections > 5, resuming.connections

"""`/metrics`: Prometheus text for admins (or on a port of its own), requests by route template,
WebSocket connections, and what the database and Redis say at scrape time."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from pathlib import Path

import httpx
import websockets
from httpx import AsyncClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from sqlalchemy import update

from app.config import load_settings
from app.core.broker import build_broker
from app.core.instruments import SharedCounters
from app.core.runtime import Runtime
from app.db.engine import build_db_config
from app.projects.models import Project
from app.runs.sweeper import sweep_once
from app.tasks.models import AgentTask, AgentType
from app.tasks.schemas import TaskCreate
from app.tasks.services import TaskService
from tests.conftest import free_port
from tests.helpers import app_client, cli_token, eventually, start_server, wait_for_task

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def named(samples: Samples, name: str, labels: Mapping[str, str]) -> list[float]:
    """Values of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return [v for (n, have), v in samples.items() if n == name and wanted <= have]


async def scrape(client: AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_metrics_for_admins_with_routes_tasks_and_model_calls(client: AsyncClient, mode: str) -> None:
    before = await scrape(client)
    project = (await client.post("/api/v1/projects", json={"name": "metered"})).json()
    assert (await client.get(f"/api/v1/projects/{project['id']}")).status_code == 200
    task = (
        await client.post(f"/api/v1/projects/{project['id']}/tasks", json={"agent_type": "coder", "instructions": "x"})
    ).json()
    await wait_for_task(client, task["task_id"], "completed", timeout=30)

    response = await client.get("/metrics")
    samples = parse(response.text)
    # Requests by route template: one series for every project, never one per id.
    route = {"method": "GET", "path": "/api/v1/projects/{project_id}", "status_code": "200"}
    assert sum(named(samples, "botarmy_requests_total", route)) >= 1
    assert named(samples, "botarmy_request_duration_seconds_count", route)
    assert project["id"] not in response.text

    assert value(samples, "botarmy_tasks", status="completed") >= value(before, "botarmy_tasks", status="completed") + 1
    assert {"pending", "queued"} == {
        dict(labels)["status"] for name, labels in samples if name == "botarmy_queue_depth"
    }
    calls = sum(named(samples, "botarmy_model_calls_total", {"provider": "offline"}))
    assert calls >= sum(named(before, "botarmy_model_calls_total", {"provider": "offline"})) + 1
    assert value(samples, "botarmy_model_tokens_total", provider="offline", direction="out") > 0
    assert value(samples, "botarmy_events_stored_total") > value(before, "botarmy_events_stored_total")
    assert ("botarmy_hitl_requests_pending", frozenset()) in samples
    assert ("botarmy_lease_expiries_total", frozenset()) in samples
    assert ("botarmy_websocket_connections", frozenset()) in samples
    if mode == "services":
        assert value(samples, "botarmy_broker_messages", state="unread") >= 0

    # Admins only, like every route that declares no role.
    assert (await client.get("/metrics", headers={"Authorization": ""})).status_code == 401


async def test_lease_expiries_are_counted_across_processes(own_services_env: dict[str, str]) -> None:
    """The sweep of one process counts an expired lease; the api of another reads it from Redis."""
    settings = load_settings(own_services_env)
    config = build_db_config(settings.db)
    redis = Redis.from_url(own_services_env["REDIS_URL"])
    try:
        runtime = Runtime(
            settings=settings,
            db_config=config,
            broker=build_broker(settings),
            counters=SharedCounters(redis, settings.redis.namespace),
        )
        async with runtime.session() as session:
            project = Project(name="leases")
            session.add(project)
            await session.commit()
            task = await TaskService(session=session).create_task(
                project.id, TaskCreate(agent_type=AgentType.CODER, instructions="x")
            )
            await session.commit()
            assert await TaskService(session=session).claim(task.id, 30) is not None
            past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
            await session.execute(update(AgentTask).where(AgentTask.id == task.id).values(lease_expires_at=past))
            await session.commit()
        await runtime.broker.startup()
        try:
            await sweep_once(runtime)
        finally:
            await runtime.broker.shutdown()
    finally:
        await config.get_engine().dispose()
        await redis.aclose()
    async with app_client(settings) as client:
        assert value(await scrape(client), "botarmy_lease_expiries_total") == 1


async def test_metrics_port_and_websocket_connections(own_services_env: dict[str, str], tmp_path: Path) -> None:
    metrics_port = free_port()
    env = {**own_services_env, "BOTARMY_METRICS_PORT": str(metrics_port)}
    server = start_server(env, free_port(), tmp_path / "api.log")
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=20) as plain:
            # The api's own /metrics still wants an admin token; viewers are refused.
            assert (await plain.get(f"{server.url}/metrics")).status_code == 401
            viewer = cli_token(env, role="viewer")
            refused = await plain.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {viewer}"})
            assert refused.status_code == 403
            project = (
                await plain.post(f"{server.url}/api/v1/projects", json={"name": "sockets"}, headers=server.headers)
            ).json()

            async def sockets() -> float:
                response = await plain.get(metrics_url)  # no token on the metrics port
                assert response.status_code == 200, response.text
                return value(parse(response.text), "botarmy_websocket_connections")

            assert await sockets() == 0
            async with (
                websockets.connect(server.ws_url(f"/ws/projects/{project['id']}")),
                websockets.connect(server.ws_url("/ws")),
            ):
                await eventually(sockets, lambda count: count == 2)
            await eventually(sockets, lambda count: count == 0)
            assert (await plain.get(f"http://127.0.0.1:{metrics_port}/other")).status_code == 404
    finally:
        server.stop()

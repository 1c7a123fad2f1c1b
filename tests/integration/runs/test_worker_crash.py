"""A worker killed with SIGKILL in the middle of a task: another worker finishes it, exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.config import load_settings
from app.db.engine import build_db_config
from app.events.models import Event
from tests.helpers import app_client, start_worker, task_status, wait_for_task


@pytest.fixture
def isolated_services_env(own_services_env: dict[str, str]) -> dict[str, str]:
    """A database and queue of this test's own (no other worker may pick the task up), slow work."""
    return {
        **own_services_env,
        "BOTARMY_TASK_LEASE_SECONDS": "2",
        "BOTARMY_SWEEP_INTERVAL_SECONDS": "0.5",
    }


async def test_killed_worker_task_is_finished_once_by_another_worker(
    isolated_services_env: dict[str, str], tmp_path: Path
) -> None:
    settings = load_settings(isolated_services_env)
    first = start_worker(isolated_services_env, tmp_path / "first.log")
    second = None
    try:
        async with app_client(settings) as client:
            project = (await client.post("/api/v1/projects", json={"name": "crash"})).json()
            submitted = (
                await client.post(
                    f"/api/v1/projects/{project['id']}/tasks",
                    json={"agent_type": "coder", "instructions": "slow [[offline:delay=8]]"},
                )
            ).json()
            task_id = submitted["task_id"]
            running = await wait_for_task(client, task_id, "working", timeout=30)
            assert running["attempts"] == 1

            first.kill()
            assert (await task_status(client, task_id))["status"] == "working"  # nobody has noticed yet

            second = start_worker(isolated_services_env, tmp_path / "second.log")
            done = await wait_for_task(client, task_id, "completed", timeout=40)
            assert done["attempts"] == 2
    finally:
        first.kill()
        if second is not None:
            second.stop()

    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            completions = await session.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.task_id == uuid.UUID(task_id), Event.data["status"].as_string() == "completed")
            )
            requeues = await session.scalar(
                select(func.count())
                .select_from(Event)
                .where(
                    Event.task_id == uuid.UUID(task_id), Event.data["message"].as_string() == "worker lost; requeued"
                )
            )
    finally:
        await config.get_engine().dispose()
    assert completions == 1
    assert requeues == 1

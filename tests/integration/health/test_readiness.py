"""A database that is not at the head revision: readiness says so (503, naming the reason), the
api answers 503 saying what to run, and every command that needs the database says it in one line
instead of a stack trace (`db current`: that there is no revision yet); an unreachable database is
one line too."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

import app.__main__ as botarmy
from app.config import load_settings
from app.db.engine import upgrade_database
from app.db.schema import head_revisions
from tests.conftest import (
    FAST_ENV,
    REDIS_TEST_URL,
    create_pg_database,
    drop_pg_database,
    drop_redis_namespace,
    free_port,
    require_services,
)
from tests.helpers import BOTARMY, REPO_ROOT, app_client


@pytest.fixture
def unmigrated_env() -> Iterator[dict[str, str]]:
    """An empty PostgreSQL database of this test's own (nobody ran `botarmy db upgrade`) and a Redis
    namespace of its own, both gone afterwards (the worker's command leaves its job stream there)."""
    require_services()
    name = f"botarmy_unmigrated_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(name)
    try:
        yield {**FAST_ENV, "DATABASE_URL": url, "REDIS_URL": REDIS_TEST_URL, "BOTARMY_REDIS_NAMESPACE": name}
    finally:
        drop_pg_database(name)
        drop_redis_namespace(name)


async def test_readiness_fails_until_the_schema_is_at_head(unmigrated_env: dict[str, str]) -> None:
    settings = load_settings(unmigrated_env)
    async with app_client(settings, role=None) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["failing"] == ["schema"]
        assert "no schema yet: run `botarmy db upgrade`" in ready.json()["components"]["schema"]["error"]
        assert (await client.get("/health")).status_code == 200  # alive, not ready

        # Every call that reaches the database says what to run, instead of a 500.
        response = await client.get("/api/v1/projects", headers={"Authorization": "Bearer bat_" + "x" * 40})
        assert response.status_code == 503, response.text
        assert "botarmy db upgrade" in response.json()["detail"]
        assert response.json()["extra"] == {"component": "schema"}

        # Migrated, but not to the head: still not ready, and the revision is named.
        await asyncio.to_thread(upgrade_database, settings.db, "+1")
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert "behind the head" in ready.json()["components"]["schema"]["error"]

        await asyncio.to_thread(upgrade_database, settings.db)
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["components"]["schema"]["healthy"]


def run_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*BOTARMY, *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_commands_say_what_to_run_in_one_line(unmigrated_env: dict[str, str]) -> None:
    unreachable = {**unmigrated_env, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/botarmy"}
    runs = {
        "token create": (unmigrated_env, ("token", "create", "--name", "ops", "--role", "admin")),
        "token revoke": (unmigrated_env, ("token", "revoke", "ops")),
        "worker": (unmigrated_env, ("worker",)),
        "token list, unreachable": (unreachable, ("token", "list")),
        # (A worker that finds the database away says so and waits for it: not here.)
        "db upgrade, unreachable": (unreachable, ("db", "upgrade")),
    }
    # Side by side: each one is a Python start-up.
    processes = {name: run_cli(env, *args) for name, (env, args) in runs.items()}
    try:
        outputs = {name: process.communicate(timeout=60) for name, process in processes.items()}
    finally:
        for process in processes.values():
            process.kill()
            process.wait()
    for name, (stdout, stderr) in outputs.items():
        assert processes[name].returncode == 1, (name, stdout, stderr)
        assert "Traceback" not in stderr, (name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (name, stderr)
        if "unreachable" in name:
            assert lines[0].startswith("botarmy: The database is unreachable ("), (name, stderr)
        else:
            assert lines[0] == "botarmy: The database has no schema yet: run `botarmy db upgrade`.", (name, stderr)


def test_db_current_names_the_revision_or_what_to_run(
    unmigrated_env: dict[str, str], embedded_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alembic alone prints nothing for a database never migrated, which reads as "all is well".
    In this process (a `botarmy` start-up costs seconds), on the settings of each database."""

    def current(env: dict[str, str]) -> tuple[int, str]:
        monkeypatch.setattr(botarmy, "get_settings", lambda: load_settings(env))
        result = CliRunner().invoke(botarmy.cli, ["db", "current"])
        return result.exit_code, result.output

    assert current(unmigrated_env) == (0, "no revision: run `botarmy db upgrade`\n")
    heads = "".join(f"{head} (head)\n" for head in sorted(head_revisions()))
    assert current(embedded_env) == (0, heads)

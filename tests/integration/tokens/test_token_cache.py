"""Token checks served from an api process's cache, and revocation still at once on every process
(`app.tokens.cache`); SQLite reads beside a held write lock (`app.db.engine.reading_only`).

Real `botarmy serve` processes sharing PostgreSQL and Redis, each with a warm cache; the revocation
comes through the other process's API or from the command line."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from redis import Redis
from sqlalchemy import update

from app.config import Settings, load_settings
from app.core.security import Principal, Role
from app.db.engine import build_db_config
from app.tokens.cache import TokenCache, revocations_key
from app.tokens.models import ApiToken
from tests.conftest import free_port
from tests.helpers import botarmy_command, cli_token, start_server
from tests.integration.events.test_stream_doors import two_servers

WARM_REQUESTS = 5


def warm(client: httpx.Client, url: str, token: str) -> None:
    """Requests enough for the process to have the token in its cache."""
    for _ in range(WARM_REQUESTS):
        response = client.get(f"{url}/api/v1/projects", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text


def test_a_revoked_token_is_refused_at_once_by_a_process_that_had_it_cached(
    own_services_env: dict[str, str], tmp_path: Path
) -> None:
    with two_servers(own_services_env, tmp_path) as (one, two), httpx.Client(timeout=20) as client:
        made = [
            client.post(f"{one.url}/api/v1/tokens", headers=one.headers, json={"name": name, "role": "viewer"}).json()
            for name in ("revoked", "bystander")
        ]
        (token, token_id), (other, _) = ((row["token"], row["id"]) for row in made)
        for server in (one, two):
            warm(client, server.url, token)
            warm(client, server.url, other)
        assert client.delete(f"{one.url}/api/v1/tokens/{token_id}", headers=one.headers).status_code == 200
        # The very next requests, on either process, whose caches held the token: refused.
        viewer = {"Authorization": f"Bearer {token}"}
        for server in (two, one):
            assert client.get(f"{server.url}/api/v1/projects", headers=viewer).status_code == 401
            # Only the revoked token: the other one still works.
            warm(client, server.url, other)


def test_a_revocation_from_the_command_line_reaches_every_warm_process(
    own_services_env: dict[str, str], tmp_path: Path
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    with two_servers(own_services_env, tmp_path) as (one, two), httpx.Client(timeout=20) as client:
        token = cli_token(own_services_env, role="viewer", name=name)
        warm(client, one.url, token)
        warm(client, two.url, token)
        done = botarmy_command(own_services_env, "token", "revoke", name)
        assert done.returncode == 0, done.stderr
        headers = {"Authorization": f"Bearer {token}"}
        for server in (one, two):
            assert client.get(f"{server.url}/api/v1/projects", headers=headers).status_code == 401


async def revoke_in_database(settings: Settings, token_id: str) -> None:
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            await session.execute(update(ApiToken).where(ApiToken.id == uuid.UUID(token_id)).values(revoked=True))
            await session.commit()
    finally:
        await config.get_engine().dispose()


def test_a_redis_emptied_meanwhile_empties_the_caches(own_services_env: dict[str, str], tmp_path: Path) -> None:
    """A generation that disappears (Redis restarted without its data) trusts no cached token."""
    settings = load_settings(own_services_env)
    with two_servers(own_services_env, tmp_path) as (one, _), httpx.Client(timeout=20) as client:
        token = cli_token(own_services_env, role="viewer")
        warm(client, one.url, token)
        redis = Redis.from_url(str(settings.redis.url))
        try:
            redis.set(revocations_key(settings.redis), "before")
            warm(client, one.url, token)  # cached under "before"
            # Revoked in the database behind the API's back, and the generation gone.
            with httpx.Client(timeout=20) as admin:
                tokens = admin.get(f"{one.url}/api/v1/tokens", headers=one.headers).json()["items"]
            token_id = next(row["id"] for row in tokens if row["role"] == "viewer")
            asyncio.run(revoke_in_database(settings, token_id))
            redis.delete(revocations_key(settings.redis))
        finally:
            redis.close()
        response = client.get(f"{one.url}/api/v1/projects", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401


def test_embedded_caches_tokens_and_a_revocation_from_the_command_line_still_reaches_it(tmp_path: Path) -> None:
    """Without Redis, the generation is a file beside the SQLite database (`revocations_file`)."""
    env = {"BOTARMY_DATA_DIR": str(tmp_path / "data"), "BOTARMY_LOG_LEVEL": "WARNING"}
    server = start_server(env, free_port(), tmp_path / "api.log")
    try:
        with httpx.Client(timeout=20) as client:
            cached, revoked = cli_token(env, role="viewer"), cli_token(env, role="viewer", name="to-revoke")
            warm(client, server.url, cached)
            warm(client, server.url, revoked)
            tokens = client.get(f"{server.url}/api/v1/tokens", headers=server.headers).json()["items"]
            cached_id = next(row["id"] for row in tokens if row["role"] == "viewer" and row["name"] != "to-revoke")
            # Revoked behind the API's back: the process answers from its cache, no database read.
            asyncio.run(revoke_in_database(load_settings(env), cached_id))
            assert client.get(f"{server.url}/api/v1/projects", headers={"Authorization": f"Bearer {cached}"}).is_success
            done = botarmy_command(env, "token", "revoke", "to-revoke")
            assert done.returncode == 0, done.stderr
            # The command line's revocation replaced the file: the whole cache is dropped at once.
            for token in (revoked, cached):
                response = client.get(f"{server.url}/api/v1/projects", headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 401
    finally:
        server.stop()


def test_the_cache_trusts_only_entries_read_under_the_current_generation() -> None:
    cache = TokenCache()
    principal = Principal(token_id=uuid.uuid4(), name="p", role=Role.VIEWER)
    cache.store("h", principal, known_before=None)
    assert cache.lookup("h") is None  # nothing is stored before a generation is known
    assert cache.confirm("g1") is False
    cache.store("h", principal, known_before="g1")
    assert cache.lookup("h") == principal
    assert cache.confirm("g1") is True
    cache.store("h2", principal, known_before="g0")  # read before a generation this cache has left
    assert cache.lookup("h2") is None
    assert cache.confirm("g2") is False  # a revocation: everything dropped
    assert cache.lookup("h") is None
    cache.store("h", principal, known_before="g2")
    assert cache.confirm(None) is False  # Redis away: nothing trusted
    assert cache.lookup("h") is None


@pytest.mark.parametrize("hold_seconds", [3.0])
def test_embedded_reads_do_not_wait_for_a_held_write_lock(tmp_path: Path, hold_seconds: float) -> None:
    env = {"BOTARMY_DATA_DIR": str(tmp_path / "data"), "BOTARMY_LOG_LEVEL": "WARNING"}
    server = start_server(env, free_port(), tmp_path / "api.log")
    try:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as client:
            project_id = client.post("/api/v1/projects", json={"name": "reads"}).json()["id"]
            client.get(f"/api/v1/projects/{project_id}/status")  # the token's last_used_at is written now
            database = Path(load_settings(env).db.sqlite_file)
            locked, release = threading.Event(), threading.Event()

            def hold() -> None:
                connection = sqlite3.connect(database, isolation_level=None, timeout=30)
                try:
                    connection.execute("BEGIN IMMEDIATE")
                    locked.set()
                    release.wait(hold_seconds)
                    connection.execute("ROLLBACK")
                finally:
                    connection.close()

            holder = threading.Thread(target=hold)
            holder.start()
            try:
                assert locked.wait(10)
                started = time.monotonic()
                for path in (f"/api/v1/projects/{project_id}/status", f"/api/v1/projects/{project_id}"):
                    assert client.get(path).status_code == 200
                took = time.monotonic() - started
            finally:
                release.set()
                holder.join()
            assert took < hold_seconds / 2, took
            # A write still waits for the lock and then succeeds.
            assert client.patch(f"/api/v1/projects/{project_id}", json={"description": "after"}).status_code == 200
    finally:
        server.stop()


def test_a_revocation_from_the_command_line_with_redis_away_says_so_and_changes_nothing(
    own_services_env: dict[str, str],
) -> None:
    """The api processes could not be told: nothing is revoked, and the line names Redis, not the database."""
    name = f"cli-{uuid.uuid4().hex[:8]}"
    cli_token(own_services_env, role="viewer", name=name)
    redis_away = {**own_services_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    done = botarmy_command(redis_away, "token", "revoke", name)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "botarmy: Redis is unreachable (ConnectionError): the api processes could not be told, so nothing was "
        "revoked; check REDIS_URL and try again"
    ]
    listed = botarmy_command(own_services_env, "token", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if name in row)
    assert "revoked" not in line, line

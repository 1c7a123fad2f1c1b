"""Fixtures for both modes.

Embedded: a new SQLite file per test, the in-process broker, in-memory channels.
Services: one PostgreSQL database and one Redis namespace per test session (created here,
dropped at the end), real `botarmy worker` processes. Each test makes its own projects, so
tests sharing the session database never see each other's rows.

Where PostgreSQL or Redis cannot be reached the services tests are skipped, except under
CI=true, where that is a failure. The same for tests that read the test data of ../shared
(`shared_path`).
"""

from __future__ import annotations

import os

# Before any app import: settings are read from the environment.
os.environ.setdefault("BOTARMY_LOG_LEVEL", "WARNING")
os.environ.setdefault("BOTARMY_ENV", "test")

import asyncio
import atexit
import contextlib
import functools
import shutil
import socket
import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis
from httpx import AsyncClient

from app.config import Settings, load_settings
from app.db.engine import upgrade_database
from tests.helpers import Process, app_client, start_worker

PG_ADMIN_DSN = os.environ.get("BOTARMY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("BOTARMY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"
# Test data beside the repo (../shared: bmad-v4, bmad-samples); BOTARMY_TEST_SHARED_DIR points elsewhere.
SHARED_DIR = Path(os.environ.get("BOTARMY_TEST_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")

# Short timings so that leases, sweeps and retries fit in a test.
FAST_ENV = {
    "BOTARMY_LOG_LEVEL": "WARNING",
    "BOTARMY_MODEL_RETRY_DELAYS": "0.1,0.2,0.4",
    "BOTARMY_PROGRESS_INTERVAL_SECONDS": "1",
    "BOTARMY_SWEEP_INTERVAL_SECONDS": "0.5",
    "BOTARMY_TASK_LEASE_SECONDS": "3",
    "BOTARMY_PENDING_REQUEUE_SECONDS": "1",
    "BOTARMY_QUEUED_REQUEUE_SECONDS": "3",
    # Every in-process client is 127.0.0.1, and the services tests share one Redis namespace: the
    # tests that walk every route without a token would use up the default failure budget of the
    # others. tests/integration/api/test_hostile.py checks the limit with a low one of its own.
    "BOTARMY_AUTH_FAILURES_PER_MINUTE": "1000000",
}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


_SERVICES_UP = _reachable("127.0.0.1", 5432) and _reachable("127.0.0.1", 6379)


def require_services() -> None:
    if _SERVICES_UP:
        return
    if IN_CI:
        pytest.fail("CI=true but PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is unreachable")
    pytest.skip("PostgreSQL or Redis is not reachable on 127.0.0.1")


def shared_path(relative: str) -> Path:
    """`SHARED_DIR / relative`; where it is missing the test is skipped, except under CI=true (a failure)."""
    path = SHARED_DIR / relative
    if path.exists():
        return path
    if IN_CI:
        pytest.fail(f"CI=true but the test data {path} is missing")
    pytest.skip(f"the test data {path} is missing (a clone without ../shared beside it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_pg_database(name: str) -> str:
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def drop_redis_namespace(namespace: str) -> None:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def migrated_services_env(prefix: str, base: dict[str, str]) -> Iterator[dict[str, str]]:
    """A migrated PostgreSQL database and a Redis namespace of their own, dropped afterwards."""
    require_services()
    suffix = uuid.uuid4().hex[:10]
    db_name, namespace = f"botarmy_{prefix}_{suffix}", f"botarmy-{prefix}-{suffix}"
    url = create_pg_database(db_name)
    env = {**base, "DATABASE_URL": url, "REDIS_URL": REDIS_TEST_URL, "BOTARMY_REDIS_NAMESPACE": namespace}
    try:
        upgrade_database(load_settings(env).db)
        yield env
    finally:
        drop_pg_database(db_name)
        drop_redis_namespace(namespace)


@pytest.fixture(scope="session")
def services_env() -> Iterator[dict[str, str]]:
    """The database and namespace of this test session, shared with its `botarmy worker`."""
    with migrated_services_env("test", FAST_ENV) as env:
        yield env


@pytest.fixture
def own_services_env() -> Iterator[dict[str, str]]:
    """A migrated database and a Redis namespace of this test's own: no session worker sees them."""
    with migrated_services_env("own", FAST_ENV) as env:
        yield env


@pytest.fixture
def isolated_settings(mode: str, request: pytest.FixtureRequest) -> Settings:
    """Settings of the mode under test, on a database no worker process uses."""
    env_fixture = "embedded_env" if mode == "embedded" else "own_services_env"
    return load_settings(request.getfixturevalue(env_fixture))


@pytest.fixture(scope="session")
def services_worker(services_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A real `botarmy worker` process for the whole session."""
    worker = start_worker(services_env, tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        yield worker
    finally:
        worker.stop()


def _sqlite_file(data_dir: Path) -> Path:
    return Path(load_settings({"BOTARMY_DATA_DIR": str(data_dir)}).db.sqlite_file)


@functools.cache
def _migrated_sqlite_template() -> Path:
    """One database at the latest schema per test process, as a single file (no WAL beside it)."""
    folder = Path(tempfile.mkdtemp(prefix="botarmy-template-"))
    atexit.register(shutil.rmtree, folder, True)
    upgrade_database(load_settings({**FAST_ENV, "BOTARMY_DATA_DIR": str(folder / "migrated")}).db)
    template = folder / "botarmy.db"
    with (
        contextlib.closing(sqlite3.connect(_sqlite_file(folder / "migrated"))) as source,
        contextlib.closing(sqlite3.connect(template)) as copy,
    ):
        source.backup(copy)
    return template


def migrated_data_dir(path: Path) -> str:
    """`path` for BOTARMY_DATA_DIR, holding a database already at the latest schema.

    A copy of one migrated file: running the migrations on a new file takes 0.7 s (2.5 s on a busy
    machine), for each of the hundreds of embedded tests. What a start does to a new file is
    tested where it matters (test_migrations, the CLI and first-start tests use new folders).
    """
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_sqlite_template(), _sqlite_file(path))
    return str(path)


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    return {**FAST_ENV, "BOTARMY_DATA_DIR": migrated_data_dir(tmp_path / "data")}


@pytest.fixture(params=["embedded", "services"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def mode_env(mode: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings of the mode under test; in services mode a real worker runs the jobs."""
    if mode == "embedded":
        return dict(request.getfixturevalue("embedded_env"))
    request.getfixturevalue("services_worker")
    return dict(request.getfixturevalue("services_env"))


@pytest.fixture
def settings(mode_env: dict[str, str]) -> Settings:
    return load_settings(mode_env)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncClient]:
    """The app in this process (lifespan included), through Litestar's test client."""
    async with app_client(settings) as test_client:
        yield test_client


SERVICES_FIXTURES = {"services_env", "own_services_env", "services_worker"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs against PostgreSQL + Redis, so that CI can count them."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        services_mode = callspec is not None and callspec.params.get("mode") == "services"
        uses_services = SERVICES_FIXTURES & set(getattr(item, "fixturenames", ()))
        if services_mode or uses_services or item.get_closest_marker("services"):
            item.add_marker("services")
            # Lands in the JUnit report, which .ci/run reads.
            item.user_properties.append(("services", "1"))

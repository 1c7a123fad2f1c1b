"""The PostgreSQL pool keeps the connections it opened beyond its size while they are needed
(`app.db.pool`): under steady load it does not open and close them over and over."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text

from app.config import load_settings
from app.db import pool
from app.db.engine import build_db_config
from tests.conftest import create_pg_database, drop_pg_database, require_services

pytestmark = pytest.mark.services


@pytest.fixture
def database_url() -> Iterator[str]:
    require_services()
    name = f"test_pool_{uuid.uuid4().hex[:8]}"
    url = create_pg_database(name)
    try:
        yield url
    finally:
        drop_pg_database(name)


async def connections_opened(url: str, waves: int) -> int:
    """Waves of four sessions at once on a pool of two (and two more beyond it); connections opened."""
    settings = load_settings({"DATABASE_URL": url, "BOTARMY_DB_POOL_SIZE": "2"})
    engine = build_db_config(settings.db).get_engine()
    opened = 0

    def count(*_: Any) -> None:
        nonlocal opened
        opened += 1

    event.listen(engine.sync_engine, "connect", count)

    async def one() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_sleep(0.02)"))

    try:
        for _ in range(waves):
            await asyncio.gather(*(one() for _ in range(4)))
            await asyncio.sleep(0.01)  # all four back in the pool, nobody waiting
    finally:
        await engine.dispose()
    return opened


async def test_connections_beyond_the_size_are_kept_while_the_load_lasts(database_url: str) -> None:
    assert await connections_opened(database_url, waves=5) == 4


async def test_they_are_closed_once_the_pool_has_not_run_short_for_a_while(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "OVERFLOW_LINGER_SECONDS", 0.0)
    # Without the lingering: the two beyond the size are closed after each wave and opened again.
    assert await connections_opened(database_url, waves=5) == 2 + 2 * 5

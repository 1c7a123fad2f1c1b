"""What a job needs to run: settings, the database, the broker to enqueue follow-up work.

The api builds one (and, on the embedded default, its in-process jobs use it); a worker
process builds its own at WORKER_STARTUP.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from taskiq import AsyncBroker

from app.config import Settings
from app.core.channels import EventPublisher
from app.core.instruments import SharedCounters


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"


class Attempts:
    """The task attempts this process runs, so that a stopping worker can hand back the unfinished.

    `draining`: the process is stopping; a job that arrives now does not claim its task (it queues
    it again for another worker). `hand_back` stops every attempt still running and waits, up to
    `wait_seconds`, for their jobs to end (each job queues its task again, then taskiq acknowledges it).
    """

    def __init__(self) -> None:
        self.draining = False
        self._running: dict[UUID, tuple[asyncio.Task[Any], Callable[[], None]]] = {}
        self._none_running = asyncio.Event()
        self._none_running.set()

    def __len__(self) -> int:
        return len(self._running)

    def add(self, task_id: UUID, stop: Callable[[], None]) -> None:
        job = asyncio.current_task()
        if job is not None:
            self._running[task_id] = (job, stop)
            self._none_running.clear()

    def remove(self, task_id: UUID) -> None:
        self._running.pop(task_id, None)
        if not self._running:
            self._none_running.set()

    async def all_ended(self) -> None:
        """Returns once no attempt runs in this process."""
        await self._none_running.wait()

    async def hand_back(self, wait_seconds: float) -> int:
        running = list(self._running.values())
        for _, stop in running:
            stop()
        jobs = [job for job, _ in running]
        if jobs:
            await asyncio.wait(jobs, timeout=wait_seconds)
        return len(jobs)


@asynccontextmanager
async def read_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection of `engine` for reads, closed at once when it has no transaction to end.

    `async with engine.connect()` closes in a task of its own, shielded, so that a cancelled
    request still finishes the close's ROLLBACK: a task and a turn of the event loop on every read.
    On PostgreSQL a connection that began no transaction (`app.db.driver`'s reads begin none) closes
    without waiting for anything, so nothing can interrupt it; any other closes shielded, as
    SQLAlchemy's own exit does.
    """
    connection = await engine.connect()
    try:
        yield connection
    finally:
        if connection.dialect.name == "postgresql" and not connection.in_transaction():
            await connection.close()
        else:
            await connection.__aexit__(None, None, None)


@dataclass
class Runtime:
    settings: Settings
    db_config: SQLAlchemyAsyncConfig
    broker: AsyncBroker
    # Sends live-only messages (model output as it streams); stored events go through the outbox.
    publisher: EventPublisher | None = None
    worker_id: str = field(default_factory=_worker_id)
    attempts: Attempts = field(default_factory=Attempts)
    # Lease expiries and hand-backs, for `/metrics` (a Redis hash in services mode).
    counters: SharedCounters = field(default_factory=SharedCounters)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.db_config.get_session() as session:
            yield session

    def connection(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection without an ORM session, for a read of plain columns on a hot path."""
        return read_connection(self.db_config.get_engine())

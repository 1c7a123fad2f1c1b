"""What a job needs to run: settings, the database, the broker to enqueue follow-up work.

The api builds one (and, on the embedded default, its in-process jobs use it); a worker
process builds its own at WORKER_STARTUP.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from uuid import uuid4

from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from sqlalchemy.ext.asyncio import AsyncSession
from taskiq import AsyncBroker

from app.config import Settings
from app.core.channels import EventPublisher


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"


@dataclass
class Runtime:
    settings: Settings
    db_config: SQLAlchemyAsyncConfig
    broker: AsyncBroker
    # Sends live-only messages (model output as it streams); stored events go through the outbox.
    publisher: EventPublisher | None = None
    worker_id: str = field(default_factory=_worker_id)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.db_config.get_session() as session:
            yield session

"""The bare taskiq worker that `bench.compare` measures BotArmy's worker against.

    python -m taskiq worker bench.bare_taskiq:broker --max-async-tasks 10 --workers 1

A taskiq-redis stream broker (acknowledged, as BotArmy's) and one job that adds one SQLAlchemy ORM
row and commits: the least a worker that records its work can do per task. Settings come from the
environment: `DATABASE_URL` (postgresql://…), `REDIS_URL` and `BARE_NAMESPACE` (the queue's keys).
"""

from __future__ import annotations

import datetime
import os

from sqlalchemy import BigInteger, DateTime, Identity, String, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from taskiq import TaskiqEvents, TaskiqState
from taskiq_redis import RedisStreamBroker

NAMESPACE = os.environ.get("BARE_NAMESPACE", "bench-bare")


class Base(DeclarativeBase):
    pass


class BareRow(Base):
    __tablename__ = "bench_bare_row"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    payload: Mapped[str] = mapped_column(String(100))
    # When the job's transaction wrote it (bench.worker_bench's rate from a full queue).
    done_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()")
    )


def async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def bare_engine() -> AsyncEngine:
    return create_async_engine(async_url(os.environ["DATABASE_URL"]), pool_size=10)


broker = RedisStreamBroker(
    url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    queue_name=f"{NAMESPACE}:jobs",
    consumer_group_name=f"{NAMESPACE}:workers",
)
sessions: dict[str, async_sessionmaker] = {}  # type: ignore[type-arg]


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def open_engine(state: TaskiqState) -> None:
    state.engine = bare_engine()
    sessions["maker"] = async_sessionmaker(state.engine, expire_on_commit=False)


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def close_engine(state: TaskiqState) -> None:
    await state.engine.dispose()


@broker.task(task_name="bench.insert_row")
async def insert_row(payload: str) -> None:
    async with sessions["maker"]() as session:
        session.add(BareRow(payload=payload))
        await session.commit()

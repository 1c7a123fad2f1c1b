"""The jobs taskiq runs for agent tasks. Registered on the shared broker by task name."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession
from taskiq import AsyncBroker, Context, TaskiqDepends, async_shared_broker

from app.core.runtime import Runtime
from app.runs.provider import services
from app.runs.runner import TaskRunner
from app.tasks.services import Enqueue


@async_shared_broker.task(task_name="tasks.run_agent_task")
async def run_agent_task(task_id: str, context: Context = TaskiqDepends()) -> None:
    runtime: Runtime = context.state.runtime
    await TaskRunner(runtime, agent_task_enqueuer(runtime.broker)).run(UUID(task_id))


def agent_task_enqueuer(broker: AsyncBroker) -> Enqueue:
    async def enqueue(task_id: UUID, job_id: str) -> None:
        await run_agent_task.kicker().with_broker(broker).with_task_id(job_id).kiq(str(task_id))

    return enqueue


async def commit_and_dispatch(runtime: Runtime, session: AsyncSession, task_ids: Sequence[UUID]) -> None:
    """Mark the tasks the transaction wrote queued, commit, then send their jobs: a worker must never
    get a job for a row it cannot see yet (a queue that is down leaves them to the sweep)."""
    tasks = services(session).tasks
    jobs = await tasks.queue_new(task_ids)
    await session.commit()
    await tasks.send_jobs(jobs, agent_task_enqueuer(runtime.broker))

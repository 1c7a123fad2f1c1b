"""The pool's queue serves waiters first come, first served (`app.db.pool`)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty, Full

from app.db import pool
from app.db.pool import FairAsyncQueue


async def wait_for_one(queue: FairAsyncQueue[str], timeout: float = 5) -> str:
    return await greenlet_spawn(queue.get, True, timeout)


async def test_a_returned_connection_goes_to_the_longest_waiter_not_to_a_newcomer() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=2)
    first = asyncio.create_task(wait_for_one(queue))
    await asyncio.sleep(0)
    second = asyncio.create_task(wait_for_one(queue))
    await asyncio.sleep(0.01)
    queue.put_nowait("one")
    # A request arriving now, before the woken waiter runs, finds nothing to take: it queues behind.
    with pytest.raises(Empty):
        queue.get_nowait()
    queue.put_nowait("two")
    assert [await first, await second] == ["one", "two"]
    assert queue.empty()


async def test_a_waiter_that_timed_out_or_was_cancelled_is_passed_over() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=2)
    with pytest.raises(Empty):
        await wait_for_one(queue, timeout=0.01)
    cancelled = asyncio.create_task(wait_for_one(queue))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    patient = asyncio.create_task(wait_for_one(queue))
    await asyncio.sleep(0.01)
    queue.put_nowait("one")
    assert await patient == "one"


async def test_a_connection_handed_to_a_waiter_cancelled_meanwhile_goes_to_the_next() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=2)
    first = asyncio.create_task(wait_for_one(queue))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(wait_for_one(queue))
    await asyncio.sleep(0.01)
    queue.put_nowait("one")  # handed to the first, which is cancelled before it runs
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert await second == "one"


def test_items_wait_in_the_queue_while_nobody_waits() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)
    queue.put_nowait("one")
    assert queue.full() and queue.qsize() == 1
    with pytest.raises(Full):
        queue.put_nowait("two")  # Full: the pool closes a connection it has no room for
    assert queue.get(block=False) == "one"
    with pytest.raises(Empty):
        queue.get(block=False)


def test_after_running_short_it_keeps_items_beyond_its_size_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "OVERFLOW_LINGER_SECONDS", 0.05)
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)
    with pytest.raises(Empty):
        queue.get(block=False)  # short of one: the pool opens one beyond its size
    queue.put_nowait("one")
    queue.put_nowait("two")  # kept: the pool ran short just now
    assert queue.qsize() == 2
    time.sleep(0.06)
    with pytest.raises(Full):
        queue.put_nowait("three")  # the shortage is long past: the pool closes it
    assert [queue.get(block=False), queue.get(block=False)] == ["one", "two"]

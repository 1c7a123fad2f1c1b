"""A connection pool that serves its waiters in the order they came.

SQLAlchemy's async pool queues connections in an `asyncio.Queue`. A returned connection wakes the
first waiter, but a request arriving before that waiter runs takes the connection first, and the
woken waiter goes back to the end of the line. Under load (more requests than connections, 50
clients on a pool of 20) some requests then waited out the whole pool timeout: p99 1 to 3.7 s and 503s
for list reads whose median was 120 ms (bench/README.md, `compare`). Here a returned connection is
handed straight to the longest waiter; a connection waits in the queue only while nobody waits for one.

It also keeps the connections it opened beyond its size (the overflow) while they are needed. The
async queue pool closes a returned connection whenever the queue already holds `pool_size`; under
steady load the number in use swings around that size, so it opened and closed connections all the
time (a new PostgreSQL backend, a TLS attempt, 11 % of a status read's CPU at 50 clients). Here a
returned connection beyond the size is kept while the pool ran short in the last `OVERFLOW_LINGER_SECONDS`;
the pool still never holds more than `pool_size + max_overflow`, and shrinks once the load is gone.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty, Full

T = TypeVar("T")

# How long connections beyond the pool's size are kept after the pool last ran short of one.
OVERFLOW_LINGER_SECONDS = 5.0


class FairAsyncQueue(AsyncAdaptedQueue[T]):
    """The pool's queue: connections handed over first come, first served."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._items: deque[T] = deque()
        self._waiters: deque[asyncio.Future[T]] = deque()
        self._short_until = 0.0  # the monotonic time until which connections beyond `maxsize` are kept

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # one that timed out or was cancelled is skipped
                waiter.set_result(item)
                return
        if self.full() and time.monotonic() >= self._short_until:
            raise Full()  # the pool closes it
        self._items.append(item)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        self.put_nowait(item)  # never blocks: the pool holds at most `maxsize` of its own

    def get_nowait(self) -> T:
        if not self._items:
            # Short of a connection: the pool waits for one or opens one beyond its size; those are kept a while.
            self._short_until = time.monotonic() + OVERFLOW_LINGER_SECONDS
            raise Empty()
        return self._items.pop() if self.use_lifo else self._items.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if self._items or not block:  # items wait only while nobody waits (put_nowait)
            return self.get_nowait()
        self._short_until = time.monotonic() + OVERFLOW_LINGER_SECONDS
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return self.await_(_wait(waiter, timeout))
        except BaseException as exc:
            # Timed out or cancelled just as a connection was handed over: it goes to the next in line.
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())
            if isinstance(exc, TimeoutError):
                raise Empty() from exc
            raise
        finally:
            waiter.cancel()  # no-op once done; else nobody hands anything to it any more


async def _wait(waiter: asyncio.Future[T], seconds: float | None) -> T:
    # Not `asyncio.wait_for`: on 3.11 it returns a result that came in as its task was cancelled,
    # swallowing the cancellation; here the cancellation wins and the connection is passed on.
    async with asyncio.timeout(seconds):
        return await waiter


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's async queue pool, with `FairAsyncQueue` as its queue."""

    _queue_class: Any = FairAsyncQueue

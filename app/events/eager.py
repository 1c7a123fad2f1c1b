"""Start an awaitable at once, on the caller's stack, and hand it to a task only if it has to wait.

One event on a busy project goes to hundreds of sockets. A send to a socket whose transport is not
backed up never waits: the server frames the message, writes it to the transport and returns. Going
through a task per socket for it added a wake-up, a task step and a generator resumed per socket and
event (bench/README.md, `ws_bench`). `start_now` runs the coroutine until it finishes or
first waits; only a send that does wait (a client that stopped reading, so the transport paused
writing) gets a task, which finishes it exactly as the event loop would have. Python 3.12's eager
tasks do the same; this project runs on 3.11 too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any


def start_now(awaitable: Awaitable[None]) -> asyncio.Future[None] | None:
    """Run a coroutine up to its end (None) or its first wait (the task that finishes it).

    An exception the coroutine raises before it waits is raised here. Any other awaitable is
    simply wrapped in a task.
    """
    if not asyncio.iscoroutine(awaitable):
        return asyncio.ensure_future(awaitable)
    coroutine: Coroutine[Any, Any, None] = awaitable
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return None
    except BaseException:
        coroutine.close()
        raise
    return asyncio.ensure_future(_finish(coroutine, awaited))


async def _finish(coroutine: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive a started coroutine on: wait for what it awaits, then resume it, as a task step would."""
    try:
        while True:
            try:
                if awaited is None:  # a bare yield (asyncio.sleep(0)): it only gives the loop a turn
                    await asyncio.sleep(0)
                else:  # a future: the coroutine reads its outcome itself when resumed
                    await asyncio.wait([awaited])
            except asyncio.CancelledError as cancelled:
                awaited = coroutine.throw(cancelled)  # this task's cancellation is the coroutine's
                continue
            awaited = coroutine.send(None)
    except StopIteration:
        return

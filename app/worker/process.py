"""`botarmy worker`: taskiq's process manager, with a stop that ends within the grace period.

Taskiq's manager passes a SIGTERM on to its worker processes only at its next one-second tick, and
then waits for them without a bound. Here a stop signal reaches every worker process at once, and
the supervisor waits for them for the grace period (plus a margin) before it kills what is left:
`podman stop` and `compose down` never have to.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from multiprocessing import Process
from types import FrameType

from taskiq.cli.worker.args import WorkerArgs
from taskiq.cli.worker.process_manager import ProcessManager, ShutdownAction
from taskiq.cli.worker.run import start_listen

logger = logging.getLogger("app.worker")

# Kept from the grace period for handing back the attempts still running (at most 1 s), closing
# down and exiting: on a loaded machine (load 6 on 2 cores) the whole stop took 9 s of an 8 s
# grace with 1.5 s kept; with 2.5 s it ends within the grace.
HAND_BACK_SECONDS = 2.5

# After the grace period: the time a worker process has to exit before it is killed.
EXIT_MARGIN_SECONDS = 1.0


def drain_seconds(grace_seconds: float) -> float:
    """How long running attempts may go on after the signal before they are handed back."""
    return max(grace_seconds - HAND_BACK_SECONDS, 0.0)


def worker_args(workers: int, concurrency: int, grace_seconds: float) -> WorkerArgs:
    return WorkerArgs.from_cli(
        [
            "app.worker.main:broker",
            "app.worker.registry",
            "--workers",
            str(workers),
            "--max-async-tasks",
            str(concurrency),
            # Running attempts go on for this long after the signal, then WORKER_SHUTDOWN hands back
            # the rest (app.worker.main), within --shutdown-timeout.
            "--wait-tasks-timeout",
            str(drain_seconds(grace_seconds)),
            "--shutdown-timeout",
            str(HAND_BACK_SECONDS),
        ]
    )


def run_workers(args: WorkerArgs, grace_seconds: float) -> int:
    """Run the worker processes until a stop signal; 0 when each of them stopped by itself."""
    logging.basicConfig(level=args.log_level, format=args.log_format)
    logging.getLogger("taskiq").setLevel(args.log_level)
    logger.info("Supervisor pid %s: starting %s worker process(es).", os.getpid(), args.workers)
    manager = ProcessManager(args=args, worker_function=start_listen)
    stopping_since: list[float] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stopping_since:
            stopping_since.append(time.monotonic())
            manager.action_queue.put(ShutdownAction())
        for worker in list(manager.workers):
            if worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signum)

    # Replaces the manager's own handlers, which forward the signal only at its next tick.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    status = manager.start()
    if status is not None:
        return 1  # taskiq's manager gave up (a worker process kept dying)
    started = stopping_since[0] if stopping_since else time.monotonic()
    return _wait_for(manager.workers, started + grace_seconds + EXIT_MARGIN_SECONDS)


def _wait_for(workers: list[Process], deadline: float) -> int:
    for worker in workers:
        worker.join(max(deadline - time.monotonic(), 0))
    killed = [worker for worker in workers if worker.is_alive()]
    for worker in killed:
        logger.warning("Worker process %s (pid %s) outlived the grace period: killed.", worker.name, worker.pid)
        worker.kill()
        worker.join(5)
    failed = [worker for worker in workers if worker.exitcode not in (0, None)]
    return 1 if killed or failed else 0

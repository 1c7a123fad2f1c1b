"""Benchmark of live event delivery to many WebSocket clients, and of the api's memory while they are connected.

    .venv/bin/python -m bench.ws_bench --mode embedded|services|both

Each mode (embedded: SQLite + in-memory channels; services: PostgreSQL + Redis pub/sub, own database
and Redis namespace, removed at the end) runs two scenarios, each against a freshly started
`python -m app serve`:

- one: `--clients` WebSocket clients on `/ws/projects/{id}` of one project;
- many: the same number of clients spread over `--projects` projects (10 each by default).

Then one `PATCH /api/v1/projects/{id}` at a time, every `--interval` seconds (round robin over the
projects), each writing a `project_updated` event, and for every (event, subscribed client) pair the
time from sending the PATCH to the client receiving the event. The api's resident memory is read
from /proc before the clients connect, with all of them connected, after the events and after they
closed; its garbage collections are logged (`--no-gc-trace` to skip) and set against the slow events.
Results are printed and written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import datetime
import gc
import json
import os
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from bench.status_bench import (
    BENCH_ENV,
    HOST,
    REPO_ROOT,
    RESULTS_DIR,
    BenchError,
    CpuMeter,
    Process,
    create_admin_token,
    git_head,
    machine,
    services_environment,
    start_api,
    summarize_ms,
    wait_for_quiet,
)
from bench.status_bench import _terminate as terminate_on_signal

REQUEST_TIMEOUT_SECONDS = 10.0
BATCH_CONNECT_SECONDS = 30.0  # one batch of handshakes
DELIVERY_SECONDS = 15.0  # after the last PATCH, for every client to have every event
WARMUP_DELIVERY_SECONDS = 15.0
CLOSE_SECONDS = 10.0
SETTLE_SECONDS = 1.0
PHASE_SLACK_SECONDS = 120.0  # beyond events x interval, for the PATCHes of one phase
HEARTBEAT_MARK = b'"heartbeat"'

# With --gc-trace (the default) the api is still `python -m app serve`, started by status_bench.start_api,
# but with this file as sitecustomize.py on its PYTHONPATH: it logs every full (generation 2) collection
# of the api, and any other over 5 ms, as "<wall-clock start> <seconds> <generation>" lines.
GC_TRACE_SITECUSTOMIZE = """
import gc, os, time
_path = os.environ.get("WS_BENCH_GC_LOG")
if _path:
    _log = open(_path, "a", buffering=1)
    _started = {}
    def _ws_bench_gc(phase, info):
        generation = info["generation"]
        if phase == "start":
            _started[generation] = (time.time(), time.perf_counter())
            return
        wall, began = _started.pop(generation, (time.time(), time.perf_counter()))
        took = time.perf_counter() - began
        if generation == 2 or took > 0.005:
            _log.write(f"{wall:.6f} {took:.6f} {generation}\\n")
    gc.callbacks.append(_ws_bench_gc)
"""


@dataclass(frozen=True)
class Config:
    clients: int
    projects: int
    events: int
    warmup_events: int
    interval: float
    batch: int
    idle_wait: float
    scenarios: tuple[str, ...]
    gc_trace: bool


@dataclass(frozen=True)
class Scenario:
    name: str
    clients: int
    projects: int


@dataclass(frozen=True)
class Collection:
    """One garbage collection of the api, wall clock."""

    start: float
    end: float
    generation: int


@dataclass(frozen=True)
class Sent:
    project_id: str
    sent: float  # perf_counter before the request
    responded: float  # perf_counter after the response


# --- the clients ------------------------------------------------------------------------------------------


class Board:
    """How many event messages (heartbeats aside) all clients received; wakes a waiter at a target."""

    def __init__(self) -> None:
        self.count = 0
        self.target: int | None = None
        self.reached = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        if self.target is not None and self.count >= self.target:
            self.reached.set()

    def expect(self, target: int) -> None:
        self.target = target
        if self.count >= target:
            self.reached.set()

    def reset(self) -> None:
        self.count, self.target = 0, None
        self.reached.clear()

    async def wait(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.reached.wait(), seconds)
        except TimeoutError:
            return False
        return True


class StreamClient(asyncio.Protocol):
    """One WebSocket client: the `websockets` sans-I/O protocol driven straight from asyncio's callbacks.

    No task per connection: a message is stamped (perf_counter) in `data_received`, when the event
    loop reads it off the socket, and kept as bytes in flat containers that the garbage collector
    does not track. Pings are answered by the protocol itself.
    """

    def __init__(self, url: str, token: str | None, project_id: str, board: Board) -> None:
        loop = asyncio.get_running_loop()
        self.project_id = project_id
        self.board = board
        self.token = token
        self.ws = ClientProtocol(parse_uri(url), max_size=None)
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.times = array.array("d")
        self.payloads: list[bytes] = []
        self.heartbeats = 0
        self.close_code: int | None = None  # of a close frame received
        self.close_reason = ""
        self.lost_at: float | None = None
        self.closing = False  # we started the close
        self._fragments: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError(f"unexpected transport {transport!r}")
        self.transport = transport
        request = self.ws.connect()
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        self.ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                self._frame(now, event)
            elif isinstance(event, Response) and not self.opened.done():
                if self.ws.handshake_exc is not None:
                    self.opened.set_exception(BenchError(f"handshake failed: {self.ws.handshake_exc!r}"))
                else:
                    self.opened.set_result(None)
        self._flush()

    def _frame(self, now: float, frame: Frame) -> None:
        if frame.opcode is Opcode.TEXT:
            if frame.fin:
                self._message(now, bytes(frame.data))
            else:
                self._fragments = bytearray(frame.data)
        elif frame.opcode is Opcode.CONT and self._fragments is not None:
            self._fragments += frame.data
            if frame.fin:
                self._message(now, bytes(self._fragments))
                self._fragments = None
        elif frame.opcode is Opcode.CLOSE:
            close = Close.parse(bytes(frame.data))
            self.close_code, self.close_reason = int(close.code), close.reason

    def _message(self, now: float, data: bytes) -> None:
        if HEARTBEAT_MARK in data[:48]:
            self.heartbeats += 1
            return
        self.times.append(now)
        self.payloads.append(data)
        self.board.add()

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None  # asyncio closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_at = time.perf_counter()
        if not self.opened.done():
            self.opened.set_exception(BenchError(f"connection lost during the handshake ({exc!r})"))
        if not self.closed.done():
            self.closed.set_result(None)

    def take(self) -> tuple[array.array[float], list[bytes]]:
        """The messages received so far; the client starts afresh."""
        taken = self.times, self.payloads
        self.times, self.payloads = array.array("d"), []
        return taken

    def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.closing = True
        with contextlib.suppress(Exception):  # already closing: nothing to send
            self.ws.send_close(1000)
        self._flush()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect_clients(
    port: int, token: str | None, project_ids: list[str], batch: int, board: Board, clients: list[StreamClient]
) -> float:
    """Connect one client per entry of `project_ids`, `batch` handshakes at a time, into `clients`."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()

    async def one(project_id: str) -> None:
        url = f"ws://{HOST}:{port}/ws/projects/{project_id}"
        _, client = await loop.create_connection(lambda: StreamClient(url, token, project_id, board), HOST, port)
        clients.append(client)
        await client.opened

    for start in range(0, len(project_ids), batch):
        chunk = project_ids[start : start + batch]
        try:
            async with asyncio.timeout(BATCH_CONNECT_SECONDS):
                results = await asyncio.gather(*(one(p) for p in chunk), return_exceptions=True)
        except TimeoutError:
            raise BenchError(
                f"clients {start}..{start + len(chunk) - 1}: handshakes not done within {BATCH_CONNECT_SECONDS:.0f} s"
            ) from None
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise BenchError(f"{len(failures)} of the {len(chunk)} clients from {start} failed: {failures[0]!r}")
    return time.perf_counter() - started


async def close_clients(clients: list[StreamClient]) -> dict[str, int]:
    for client in clients:
        client.close()
    pending = [client.closed for client in clients if not client.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=CLOSE_SECONDS)
    aborted = 0
    for client in clients:
        if not client.closed.done():
            client.abort()
            aborted += 1
    await asyncio.sleep(0)  # let connection_lost run
    return {"closed": len(clients) - aborted, "aborted_after_timeout": aborted}


def dropped(clients: list[StreamClient]) -> Counter[str]:
    """Clients whose connection ended without our asking, by close code."""
    return Counter(
        str(client.close_code) if client.close_code is not None else "no close frame"
        for client in clients
        if client.lost_at is not None and not client.closing
    )


# --- the api ----------------------------------------------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            values[key] = int(rest.split()[0])
    return values


async def create_project(http: httpx.AsyncClient, name: str) -> str:
    response = await http.post("/api/v1/projects/", json={"name": name, "description": "ws bench"})
    if response.status_code != 201:
        raise BenchError(f"create project: {response.status_code} {response.text[:300]}")
    return str(response.json()["id"])


async def send_events(
    http: httpx.AsyncClient, project_ids: list[str], count: int, interval: float, label: str
) -> tuple[list[Sent], int]:
    """`count` PATCHes, one at a time, one every `interval` s, round robin; and how many started late."""
    sends: list[Sent] = []
    late = 0
    started = time.perf_counter()
    deadline = started + count * interval + PHASE_SLACK_SECONDS
    for k in range(count):
        delay = started + k * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif k:
            late += 1
        if time.perf_counter() > deadline:
            raise BenchError(f"{label}: PATCHes exceeded {count * interval + PHASE_SLACK_SECONDS:.0f} s after {k}")
        project_id = project_ids[k % len(project_ids)]
        sent = time.perf_counter()
        response = await http.patch(f"/api/v1/projects/{project_id}", json={"description": f"{label} {k}"})
        responded = time.perf_counter()
        if response.status_code != 200:
            raise BenchError(f"{label}: PATCH {k}: {response.status_code} {response.text[:300]}")
        sends.append(Sent(project_id, sent, responded))
    return sends, late


async def audit_events(http: httpx.AsyncClient, after: int, event_type: str | None = None) -> list[dict[str, Any]]:
    """The audit log after event id `after` (0: all), oldest first."""
    items: list[dict[str, Any]] = []
    cursor: str | None = str(after)
    for _ in range(10_000):
        params = {"limit": "100", "cursor": cursor or "0"}
        if event_type is not None:
            params["event_type"] = event_type
        response = await http.get("/api/v1/audit/events", params=params)
        if response.status_code != 200:
            raise BenchError(f"audit log: {response.status_code} {response.text[:300]}")
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise BenchError("audit log: more than 1,000,000 events")


async def warm_up_api(port: int, token: str | None, http: httpx.AsyncClient, project_id: str) -> None:
    """One client, two events: the api's WebSocket and channel code paths run once before the baseline."""
    board = Board()
    clients: list[StreamClient] = []
    try:
        await connect_clients(port, token, [project_id], 1, board, clients)
        await send_events(http, [project_id], 2, 0.05, "warm-up")
        board.expect(2)
        if not await board.wait(WARMUP_DELIVERY_SECONDS):
            raise BenchError(f"warm-up: {board.count} of 2 events reached the single client")
    finally:
        await close_clients(clients)


# --- one scenario -----------------------------------------------------------------------------------------


def read_gc_log(path: Path | None, since: float, until: float) -> list[Collection] | None:
    """The api's logged collections that overlap [since, until] (wall clock); None without --gc-trace."""
    if path is None:
        return None
    if not path.exists():
        return []
    collections = []
    for line in path.read_text().splitlines():
        start, took, generation = line.split()
        collection = Collection(float(start), float(start) + float(took), int(generation))
        if collection.end > since and collection.start < until:
            collections.append(collection)
    return collections


def gc_summary(collections: list[Collection]) -> dict[str, Any]:
    full = [c.end - c.start for c in collections if c.generation == 2]
    other = [c.end - c.start for c in collections if c.generation != 2]
    return {
        "full_collections": len(full),
        "full_ms_mean": round(sum(full) / len(full) * 1000, 1) if full else None,
        "full_ms_max": round(max(full) * 1000, 1) if full else None,
        "younger_over_5ms": len(other),
        "younger_over_5ms_max": round(max(other) * 1000, 1) if other else None,
    }


def analyse(
    clients: list[StreamClient],
    received: list[tuple[array.array[float], list[bytes]]],
    sends: list[Sent],
    events: list[dict[str, Any]],
    wall_offset: float,
    collections: list[Collection] | None,
) -> dict[str, Any]:
    """Match every message to its PATCH: the k-th project_updated event of the phase is the k-th PATCH's.

    With the api's collections: which events were in flight (PATCH sent .. last subscriber reached)
    while the api collected garbage, and the latencies of the others.
    """
    index = {int(event["id"]): k for k, event in enumerate(events)}
    created = [datetime.datetime.fromisoformat(event["timestamp"]).timestamp() for event in events]
    subscribers = Counter(client.project_id for client in clients)
    expected_per_event = [subscribers[sent.project_id] for sent in sends]
    send_to_receive: list[float] = []
    timestamp_to_receive: list[float] = []
    first = [float("inf")] * len(sends)
    last = [float("-inf")] * len(sends)
    got = [0] * len(sends)
    latencies: list[list[float]] = [[] for _ in sends]
    duplicates = other = before_response = 0
    clients_with_all = 0
    for client, (times, payloads) in zip(clients, received, strict=True):
        seen: set[int] = set()
        for t, payload in zip(times, payloads, strict=True):
            message = json.loads(payload)
            k = index.get(int(message.get("id") or -1))
            if k is None or message.get("event_type") != "project_updated":
                other += 1
                continue
            if k in seen:
                duplicates += 1
                continue
            seen.add(k)
            got[k] += 1
            latencies[k].append(t - sends[k].sent)
            send_to_receive.append(t - sends[k].sent)
            timestamp_to_receive.append(t + wall_offset - created[k])
            first[k], last[k] = min(first[k], t), max(last[k], t)
            before_response += t < sends[k].responded
        wanted = sum(1 for sent in sends if sent.project_id == client.project_id)
        clients_with_all += len(seen) == wanted
    complete = [k for k in range(len(sends)) if got[k]]
    gc_effect: dict[str, Any] = {}
    if collections is not None:
        during_gc = {
            k
            for k in complete
            if any(
                c.start < last[k] + wall_offset and c.end > sends[k].sent + wall_offset
                for c in collections
                if c.generation == 2
            )
        }
        clear = [k for k in complete if k not in during_gc]
        gc_effect = {
            "api_gc": gc_summary(collections),
            "events_in_flight_during_full_gc": len(during_gc),
            "per_event_last_receive_during_full_gc": summarize_ms([last[k] - sends[k].sent for k in during_gc]),
            "per_event_last_receive_other_events": summarize_ms([last[k] - sends[k].sent for k in clear]),
            "send_to_receive_other_events": summarize_ms([v for k in clear for v in latencies[k]]),
        }
    return {
        "expected_pairs": sum(expected_per_event),
        "delivered_pairs": len(send_to_receive),
        "missing_pairs": sum(expected_per_event) - len(send_to_receive),
        "duplicate_messages": duplicates,
        "other_messages": other,
        "clients_with_every_event": clients_with_all,
        "events_reaching_every_subscriber": sum(got[k] == expected_per_event[k] for k in range(len(sends))),
        "events_reaching_no_subscriber": len(sends) - len(complete),
        "received_before_patch_response": before_response,
        "send_to_receive": summarize_ms(send_to_receive),
        "event_timestamp_to_receive": summarize_ms(timestamp_to_receive),
        "patch_round_trip": summarize_ms([sent.responded - sent.sent for sent in sends]),
        # per event: its slowest subscriber, and the spread between its first and last one
        "per_event_last_receive": summarize_ms([last[k] - sends[k].sent for k in complete]),
        "per_event_fan_out_spread": summarize_ms([last[k] - first[k] for k in complete]),
        **gc_effect,
    }


async def run_scenario(
    api: Process, base_url: str, token: str | None, scenario: Scenario, config: Config, gc_log: Path | None
) -> dict[str, Any]:
    pid = api.popen.pid
    port = int(base_url.rsplit(":", 1)[1])
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    result: dict[str, Any] = {"scenario": scenario.name, "clients": scenario.clients, "projects": scenario.projects}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as http:
        project_ids = [await create_project(http, f"ws bench {scenario.name} {i}") for i in range(scenario.projects)]
        await warm_up_api(port, token, http, project_ids[0])
        await asyncio.sleep(SETTLE_SECONDS)
        memory: dict[str, Any] = {"before": memory_kib(pid)}
        board = Board()
        clients: list[StreamClient] = []
        try:
            assignment = [project_ids[i % len(project_ids)] for i in range(scenario.clients)]
            print(f"    connecting {scenario.clients} clients, {config.batch} at a time …", flush=True)
            result["connect_seconds"] = round(
                await connect_clients(port, token, assignment, config.batch, board, clients), 2
            )
            await asyncio.sleep(SETTLE_SECONDS)
            if lost := dropped(clients):
                raise BenchError(f"clients dropped right after connecting: {dict(lost)}")
            memory["connected"] = memory_kib(pid)
            subscribers = Counter(assignment)

            # Warm-up: every project gets at least one event (a Redis subscription takes a moment).
            warmup = max(config.warmup_events, len(project_ids)) if config.warmup_events else 0
            if warmup:
                print(f"    {warmup} warm-up events …", flush=True)
                sends, _ = await send_events(http, project_ids, warmup, config.interval, "warm-up")
                expected = sum(subscribers[sent.project_id] for sent in sends)
                board.expect(expected)
                await board.wait(WARMUP_DELIVERY_SECONDS)
                result["warmup"] = {"events": warmup, "expected_pairs": expected, "delivered_pairs": board.count}
            for client in clients:
                client.take()
            board.reset()
            last_before = max((int(e["id"]) for e in await audit_events(http, 0)), default=0)

            result["machine_busy_before_percent"] = await wait_for_quiet(config.idle_wait)
            print(
                f"    {config.events} events, one every {config.interval * 1000:g} ms, "
                f"to {scenario.clients} clients on {scenario.projects} project(s) …",
                flush=True,
            )
            heartbeats_before = sum(client.heartbeats for client in clients)
            await http.get("/health")  # the PATCH connection, open again after the quiet wait (keep-alive 5 s)
            wall_offset = time.time() - time.perf_counter()
            gc.collect()
            gc.disable()  # no collection pause of the bench's own inside the measured phase
            try:
                with CpuMeter({"api": pid}) as cpu:
                    sends, late = await send_events(http, project_ids, config.events, config.interval, "event")
                    board.expect(sum(subscribers[sent.project_id] for sent in sends))
                    all_in = await board.wait(DELIVERY_SECONDS)
                    phase_end = time.perf_counter()
            finally:
                gc.enable()
            await asyncio.sleep(0.2)  # a late duplicate would show
            memory["after_events"] = memory_kib(pid)
            received = [client.take() for client in clients]
            events = await audit_events(http, last_before, "project_updated")
            if len(events) != len(sends) or any(
                str(e["project_id"]) != s.project_id for e, s in zip(events, sends, strict=False)
            ):
                raise BenchError(f"{len(events)} project_updated events in the audit log for {len(sends)} PATCHes")
            result.update(
                events=len(sends),
                interval_ms=config.interval * 1000,
                patches_started_late=late,
                # achieved: below 1 / interval when a PATCH took longer than the interval
                events_per_s=round((len(sends) - 1) / max(1e-9, sends[-1].sent - sends[0].sent), 1),
                all_delivered_within_timeout=all_in,
                heartbeats_during_phase=sum(client.heartbeats for client in clients) - heartbeats_before,
                dropped_by_server=dict(dropped(clients)),
                cpu=cpu.result,
            )
            collections = read_gc_log(gc_log, sends[0].sent + wall_offset, phase_end + wall_offset)
            result.update(analyse(clients, received, sends, events, wall_offset, collections))
        finally:
            result["close"] = await close_clients(clients)
        await asyncio.sleep(SETTLE_SECONDS)
        memory["after_close"] = memory_kib(pid)
    rss = {phase: values["VmRSS"] for phase, values in memory.items()}
    result["api_memory_kib"] = {f"rss_{phase}": value for phase, value in rss.items()}
    result["api_memory_kib"]["peak_rss"] = memory["after_close"]["VmHWM"]
    if "connected" in rss:
        result["api_memory_kib"]["per_connection"] = round((rss["connected"] - rss["before"]) / scenario.clients, 1)
    return result


def api_log_findings(api: Process) -> dict[str, Any]:
    """The api logs at WARNING: every line is worth a look (tracebacks, warnings)."""
    lines = [line for line in api.log_path.read_text(errors="replace").splitlines() if line.strip()]
    return {"lines": len(lines), "first_lines": lines[:20]}


def run_mode(mode: str, config: Config) -> dict[str, Any]:
    print(f"== {mode} mode", flush=True)
    info: dict[str, Any] = {"scenarios": [], "failures": {}}
    with tempfile.TemporaryDirectory(prefix=f"botarmy-wsbench-{mode}-") as workdir, contextlib.ExitStack() as stack:
        log_dir = Path(workdir)
        if mode == "embedded":
            env = {**BENCH_ENV, "BOTARMY_DATA_DIR": str(log_dir / "data")}
        else:
            env = stack.enter_context(services_environment(info))
        token = create_admin_token(env)
        info["authenticated"] = token is not None
        site_dir = log_dir / "gc-trace"
        if config.gc_trace:
            site_dir.mkdir()
            (site_dir / "sitecustomize.py").write_text(GC_TRACE_SITECUSTOMIZE)
        for scenario in scenarios(config):
            print(f"  -- {scenario.name}: {scenario.clients} clients on {scenario.projects} project(s)", flush=True)
            scenario_dir = log_dir / scenario.name
            scenario_dir.mkdir()
            api_env, gc_log = env, None
            if config.gc_trace:
                gc_log = scenario_dir / "gc.log"
                python_path = os.pathsep.join(filter(None, [str(site_dir), os.environ.get("PYTHONPATH")]))
                api_env = {**env, "PYTHONPATH": python_path, "WS_BENCH_GC_LOG": str(gc_log)}
            api, base_url = start_api(api_env, scenario_dir)
            try:
                outcome = asyncio.run(run_scenario(api, base_url, token, scenario, config, gc_log))
            except Exception as exc:
                info["failures"][scenario.name] = str(exc) or repr(exc)
                print(f"!! {mode}/{scenario.name} failed: {exc}\n--- api log (tail)\n{api.log_tail()}", file=sys.stderr)
                outcome = {"scenario": scenario.name, "failed": str(exc) or repr(exc)}
            finally:
                api.stop()  # before the database is dropped
            outcome["api_log"] = api_log_findings(api)
            info["scenarios"].append(outcome)
    return info


def scenarios(config: Config) -> list[Scenario]:
    table = {
        "one": Scenario("one", config.clients, 1),
        "many": Scenario("many", config.clients, config.projects),
    }
    return [table[name] for name in config.scenarios]


def raise_fd_limit(clients: int) -> dict[str, int]:
    """Room for the sockets of both ends (the api inherits the limit) and the api's own files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * clients + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        if new < wanted:
            raise BenchError(f"RLIMIT_NOFILE hard limit {hard} is below the {wanted} needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return {"soft": soft, "hard": hard}


# --- report -----------------------------------------------------------------------------------------------


def _ms(stats: dict[str, Any], key: str) -> str:
    value = stats.get(key)
    return f"{value:>9.1f}" if isinstance(value, int | float) else f"{'-':>9}"


def _mib(memory: dict[str, Any], key: str) -> str:
    return f"{memory[key] / 1024:.1f}" if key in memory else "-"


def print_table(results: dict[str, Any]) -> None:
    print()
    print("PATCH sent -> project_updated received, over every (event, subscribed client) pair")
    header = (
        f"{'mode':<10}{'scenario':<9}{'clients':>8}{'events':>7}{'ev/s':>6}{'late':>5}{'delivered':>16}{'all evts':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'ts p99':>9}{'api':>6}{'bench':>7}{'other':>7}"
    )
    print(header)
    print("-" * len(header))
    for mode, info in results.items():
        for s in info["scenarios"]:
            if "send_to_receive" not in s:
                print(f"{mode:<10}{s['scenario']:<9} failed: {s.get('failed', '?')}")
                continue
            lat, cpu = s["send_to_receive"], s["cpu"]
            delivered = f"{s['delivered_pairs']}/{s['expected_pairs']}"
            print(
                f"{mode:<10}{s['scenario']:<9}{s['clients']:>8}{s['events']:>7}{s['events_per_s']:>6.1f}"
                f"{s['patches_started_late']:>5}{delivered:>16}"
                f"{s['clients_with_every_event']:>9}{_ms(lat, 'p50_ms')}{_ms(lat, 'p99_ms')}{_ms(lat, 'max_ms')}"
                f"{_ms(s['event_timestamp_to_receive'], 'p99_ms')}{cpu['api_cpu_percent']:>5.0f}%"
                f"{cpu['bench_client_cpu_percent']:>6.0f}%{cpu['other_cpu_percent']:>6.0f}%"
            )
    print("ev/s: PATCHes per second achieved; late: PATCHes started behind schedule (the previous one had not")
    print("answered yet); all evts: clients that got every event of their project; ts p99: event timestamp ->")
    print("received; api, bench, other: CPU during the events, % of one core")
    print()
    if any("api_gc" in s for info in results.values() for s in info["scenarios"]):
        print("api garbage collections during the events (full: generation 2; young>5ms: younger ones over 5 ms),")
        print("the events in flight during a full one, and the latency of the other events")
        header = (
            f"{'mode':<10}{'scenario':<9}{'full GCs':>9}{'mean ms':>9}{'max ms':>8}{'young>5ms':>10}{'events hit':>11}"
            f"{'their last-client p50':>22}{'other events: pairs p99':>25}{'last-client p99':>17}"
        )
        print(header)
        print("-" * len(header))
        for mode, info in results.items():
            for s in info["scenarios"]:
                if "api_gc" not in s:
                    continue
                gc_, hit, rest = (
                    s["api_gc"],
                    s["per_event_last_receive_during_full_gc"],
                    s["send_to_receive_other_events"],
                )
                print(
                    f"{mode:<10}{s['scenario']:<9}{gc_['full_collections']:>9}{gc_['full_ms_mean'] or 0:>9.1f}"
                    f"{gc_['full_ms_max'] or 0:>8.1f}{gc_['younger_over_5ms']:>10}"
                    f"{s['events_in_flight_during_full_gc']:>11}{_ms(hit, 'p50_ms'):>22}"
                    f"{_ms(rest, 'p99_ms'):>25}{_ms(s['per_event_last_receive_other_events'], 'p99_ms'):>17}"
                )
        print()
    print("api process memory (MiB resident; per connection: (connected - before) / clients, KiB)")
    header = (
        f"{'mode':<10}{'scenario':<9}{'before':>8}{'connected':>11}{'after events':>14}{'after close':>13}"
        f"{'peak':>8}{'KiB/conn':>10}{'connect s':>11}"
    )
    print(header)
    print("-" * len(header))
    for mode, info in results.items():
        for s in info["scenarios"]:
            mem = s.get("api_memory_kib", {})
            print(
                f"{mode:<10}{s['scenario']:<9}{_mib(mem, 'rss_before'):>8}{_mib(mem, 'rss_connected'):>11}"
                f"{_mib(mem, 'rss_after_events'):>14}{_mib(mem, 'rss_after_close'):>13}{_mib(mem, 'peak_rss'):>8}"
                f"{mem.get('per_connection', '-'):>10}{s.get('connect_seconds', '-'):>11}"
            )
    print()


def parse_args(argv: list[str] | None) -> tuple[list[str], Config]:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "services", "both"], default="both")
    parser.add_argument("--scenarios", default="one,many", help="comma-separated: one, many (default both)")
    parser.add_argument("--clients", type=int, default=1000, help="WebSocket clients per scenario (max 5000)")
    parser.add_argument("--projects", type=int, default=100, help="projects of the 'many' scenario")
    parser.add_argument("--events", type=int, default=200, help="measured events per scenario (max 5000)")
    parser.add_argument(
        "--warmup-events", type=int, default=20, help="unmeasured events first (at least one per project; 0: none)"
    )
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between PATCH starts (default 0.05)")
    parser.add_argument("--batch", type=int, default=50, help="handshakes at a time while connecting")
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=30.0,
        help="before the measured events, wait up to this many seconds for the machine to be idle (max 600)",
    )
    parser.add_argument(
        "--no-gc-trace",
        dest="gc_trace",
        action="store_false",
        help="do not log the api's garbage collections (no sitecustomize on its PYTHONPATH)",
    )
    args = parser.parse_args(argv)
    names = tuple(name.strip() for name in args.scenarios.split(",") if name.strip())
    if not names or not set(names) <= {"one", "many"}:
        parser.error("--scenarios: one, many or one,many")
    if not 1 <= args.clients <= 5000 or not 1 <= args.projects <= args.clients:
        parser.error("--clients 1..5000, --projects 1..clients")
    if not 1 <= args.events <= 5000 or not 0 <= args.warmup_events <= 1000:
        parser.error("--events 1..5000, --warmup-events 0..1000")
    if not 0.001 <= args.interval <= 10 or not 1 <= args.batch <= 500 or not 0 <= args.idle_wait <= 600:
        parser.error("--interval 0.001..10, --batch 1..500, --idle-wait 0..600")
    modes = ["embedded", "services"] if args.mode == "both" else [args.mode]
    config = Config(
        args.clients,
        args.projects,
        args.events,
        args.warmup_events,
        args.interval,
        args.batch,
        args.idle_wait,
        names,
        args.gc_trace,
    )
    return modes, config


def main(argv: list[str] | None = None) -> int:
    modes, config = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate_on_signal)
    started = datetime.datetime.now(datetime.UTC)
    fd_limit = raise_fd_limit(config.clients)
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for mode in modes:
        try:
            results[mode] = run_mode(mode, config)
            failures.update({f"{mode}/{name}": text for name, text in results[mode]["failures"].items()})
        except Exception as exc:
            failures[mode] = str(exc) or repr(exc)
            print(f"!! {mode} mode failed: {exc}", file=sys.stderr)
    print_table(results)
    report = {
        "benchmark": "ws_bench",
        "started_at": started.isoformat(),
        "machine": machine(),
        "git_head": git_head(),
        "config": asdict(config),
        "env": BENCH_ENV,
        "fd_limit": fd_limit,
        "results": results,
        "failures": failures,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"ws_bench-{'-'.join(modes)}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {path.relative_to(REPO_ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of context-store retrieval (artifact lists, filters, text search, get) on PostgreSQL.

    .venv/bin/python -m bench.artifacts_bench [--requests 200] [--concurrency 1,4] [--no-gc-trace]

Makes its own PostgreSQL database and Redis namespace (as `bench.status_bench --mode services`),
migrated to the app's latest schema, starts `python -m app serve` on a free 127.0.0.1 port, creates
the projects through the API and bulk-loads the artifacts with COPY (UUIDv7 ids in creation order,
~1-2 KB of JSON content each). Then, against the served API, with one and with a few concurrent clients
(closed loop) and a bounded number of requests per query, it measures p50/p99/max latency of
`GET /api/v1/projects/{id}/artifacts` (first page, all pages, filters, text search) and
`GET /api/v1/artifacts/{id}`, in these scenarios:

1. `1k`: the database holds one project's 1,000 artifacts and nothing else;
2. `100k`: 100,000 artifacts across 100 projects; the same project (still 1,000 artifacts);
3. `100k-largest`: the largest project of that database.

The schema is the migrations' own: the report lists the artifact table's indexes and their sizes, and
warns if one of the retrieval indexes (EXPECTED_INDEXES) is missing.

For every artifact query it also runs the very statements the app sends (captured from ArtifactService;
a text search sends up to three per page, each explained on its own and their times summed) under
EXPLAIN ANALYZE, both as a prepared statement executed again and again (which PostgreSQL may switch
to a generic plan under plan_cache_mode = auto) and planned for its values (force_custom_plan), and it
records which of the two the app's own connections use, so that a slow query can be attributed to
PostgreSQL or to the API. The garbage collections of the api (see GC_TRACE_SERVE) and of this process
(ClientCollections) are logged and matched with the slow requests.

The database and the Redis keys are removed at the end, whatever happened. Results are printed and
written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import itertools
import json
import math
import random
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.artifacts.models import search_text_of
from bench.status_bench import (
    BENCH_ENV,
    HOST,
    RESULTS_DIR,
    SERVER_START_SECONDS,
    BenchError,
    CpuMeter,
    Process,
    Target,
    _terminate,
    child_env,
    create_admin_token,
    free_port,
    git_head,
    machine,
    services_environment,
    start_api,
    summarize_ms,
    wait_for_quiet,
)

PAGE_LIMIT = 100  # the largest page the API allows
WARMUP_REQUESTS = 20  # per query, before measuring: connections, plan and statement caches
TARGET_P99_MS = 50.0
LOAD_TIMEOUT_SECONDS = 900.0  # COPY, VACUUM ANALYZE
SQL_TIMEOUT_SECONDS = 60.0  # each EXPLAIN ANALYZE or fetch
SQL_WARMUP_RUNS = 6  # PostgreSQL decides on a generic plan after the fifth execution
DAY = 86_400.0

# Words the text searches look for; no other generated text contains them (checked in generate_rows).
RARE_WORD = "zanzibar"  # in ~0.5 % of the artifacts
COMMON_WORD = "latency"  # in ~40 %
COMMON_TAG = "backend"  # ~30 %
RARE_TAG = "security-audit"  # ~1 %

WORDS = (
    "api service request response database query index cache queue worker deploy build test coverage module "
    "component endpoint schema migration user project agent context artifact document section version review "
    "approval budget token model prompt plan milestone risk mitigation requirement feature persona metric "
    "throughput error retry timeout backoff container image cluster node replica config secret log trace span "
    "alert dashboard release rollback branch commit merge pipeline stage job lint format type check contract "
    "interface adapter handler router middleware session transaction lock snapshot backup restore storage "
    "bucket file path parser encoder decoder stream batch event channel socket message broker topic partition "
    "offset consumer producer scheduler cron lease sweep the a of to and for with on in by from when each every "
    "must should could will not only then also before after during between invoice customer order payment "
    "account login password email notification report export import upload download search filter page sort"
).split()
TAG_POOL = (
    "frontend api database auth infra ci docs performance ux mobile billing search observability storage "
    "messaging compliance refactor bugfix mvp v2"
).split()
TYPE_WEIGHTS = {
    "user_input": 5,
    "project_plan": 6,
    "software_specification": 8,
    "system_architecture": 8,
    "implementation_plan": 8,
    "source_code": 25,
    "test_results": 15,
    "deployment_log": 10,
    "deployment_package": 3,
    "agent_output": 10,
    "hitl_response": 2,
}
AGENT_OF = {
    "user_input": None,
    "hitl_response": None,
    "project_plan": "orchestrator",
    "agent_output": "orchestrator",
    "software_specification": "analyst",
    "system_architecture": "architect",
    "implementation_plan": "architect",
    "source_code": "coder",
    "test_results": "tester",
    "deployment_log": "deployer",
    "deployment_package": "deployer",
}
TITLE_PREFIX = {
    "user_input": "Request",
    "hitl_response": "Decision",
    "project_plan": "Plan",
    "agent_output": "Note",
    "software_specification": "PRD",
    "system_architecture": "Architecture",
    "implementation_plan": "Implementation plan",
    "source_code": "Code",
    "test_results": "Test run",
    "deployment_log": "Deployment",
    "deployment_package": "Package",
}
VALIDATION = ("unvalidated", "valid", "invalid", "needs_review")
COPY_COLUMNS = (
    "id",
    "project_id",
    "source_agent",
    "artifact_type",
    "granularity",
    "title",
    "content",
    "version",
    "metadata",
    "stale",
    "created_at",
    "updated_at",
    "search_text",
)
COPY_BATCH = 5_000
# The indexes the retrieval queries rely on (migrations 7c2e4a9d5b13, 9a4d2f7c1e85): lists walk
# (project_id, id) and `q` is served by the trigram index on the column ArtifactService searches.
EXPECTED_INDEXES = ("ix_artifact_project_id_id", "ix_artifact_search_text_trgm")
PLAN_CACHE_MODES = ("auto", "force_custom_plan", "force_generic_plan")


@dataclass(frozen=True)
class Config:
    projects: int
    artifacts: int
    project_size: int
    requests: int
    concurrency: tuple[int, ...]
    explain_runs: int
    idle_wait: float
    seed: int
    gc_trace: bool
    plan_cache_mode: str | None  # experiment: set for the bench's database (ALTER DATABASE); None: the app's


@dataclass(frozen=True)
class Row:
    """One artifact to load, and what the filters need to know of it."""

    id: uuid.UUID
    project: int  # index into the project list
    source_agent: str | None
    artifact_type: str
    title: str
    content: str  # JSON text
    meta: str  # JSON text
    tags: tuple[str, ...]
    created_at: datetime.datetime

    def record(self, project_ids: list[uuid.UUID]) -> tuple[Any, ...]:
        return (
            self.id,
            project_ids[self.project],
            self.source_agent,
            self.artifact_type,
            "document",
            self.title,
            self.content,
            1,
            self.meta,
            False,
            self.created_at,
            self.created_at,
            self.search_text,
        )

    @property
    def search_text(self) -> str:
        return search_text_of(self.title, json.loads(self.content))

    def matches(self, params: dict[str, str]) -> bool:
        """Whether the API's filters select this row (as ArtifactService.list_page does)."""
        if "artifact_type" in params and self.artifact_type != params["artifact_type"]:
            return False
        if "source_agent" in params and self.source_agent != params["source_agent"]:
            return False
        if "tag" in params and params["tag"] not in self.tags:
            return False
        if "q" in params:
            return params["q"].lower() in self.search_text
        return True


# --- data ------------------------------------------------------------------------------------------------


def project_sizes(config: Config, rng: random.Random) -> list[int]:
    """Artifacts per project: the first exactly `project_size`, the others varied (log-normal), summing up."""
    rest, others = config.artifacts - config.project_size, config.projects - 1
    if others == 0:
        return [config.project_size]
    weights = [rng.lognormvariate(0, 0.6) for _ in range(others)]
    total = sum(weights)
    sizes = [max(1, round(w / total * rest)) for w in weights]
    largest = max(range(others), key=sizes.__getitem__)
    sizes[largest] += rest - sum(sizes)
    return [config.project_size, *sizes]


def _sentence(rng: random.Random, low: int, high: int) -> str:
    text = " ".join(rng.choices(WORDS, k=rng.randint(low, high)))
    return text[0].upper() + text[1:] + "."


def make_content(rng: random.Random, artifact_type: str, target_bytes: int, marker: str) -> dict[str, Any]:
    """A document of roughly `target_bytes` of JSON, shaped like the type's content; `marker` in one text."""
    parts: list[dict[str, Any]] = []
    size = 0
    while size < target_bytes:
        if artifact_type in {"source_code", "deployment_package"}:
            name = "_".join(rng.choices(WORDS[:60], k=2))
            code = "\n".join(f"def {rng.choice(WORDS[:60])}_{i}(): return {rng.randint(0, 999)}" for i in range(3))
            part: dict[str, Any] = {"path": f"src/{name}.py", "language": "python", "content": code}
        elif artifact_type == "test_results":
            part = {
                "id": f"TC-{rng.randint(1, 999)}",
                "title": _sentence(rng, 3, 6),
                "steps": [_sentence(rng, 5, 10) for _ in range(2)],
                "status": rng.choice(("passed", "passed", "failed", "not_run")),
            }
        else:
            part = {"heading": _sentence(rng, 2, 5), "text": _sentence(rng, 25, 50)}
        parts.append(part)
        size += len(json.dumps(part)) + 2
    if marker:
        target = rng.choice(parts)
        text_key = next(k for k in ("content", "title", "text") if k in target)
        words = target[text_key].split(" ")
        words.insert(rng.randrange(len(words) + 1), marker)
        target[text_key] = " ".join(words)
    key = {"source_code": "files", "deployment_package": "files", "test_results": "test_cases"}.get(
        artifact_type, "sections"
    )
    return {"summary": _sentence(rng, 10, 20), key: parts, "format": "structured"}


def generate_rows(sizes: list[int], rng: random.Random, now: datetime.datetime) -> list[Row]:
    """Every artifact, in id (= creation) order. Each project is active for a while within the last 180 days."""
    types, type_weights = list(TYPE_WEIGHTS), list(TYPE_WEIGHTS.values())
    span = 180 * DAY
    end = now.timestamp() - 3600
    drafts: list[tuple[float, int]] = []
    for project, size in enumerate(sizes):
        start = end - span + rng.uniform(0, span - 20 * DAY)
        length = rng.uniform(15 * DAY, min(60 * DAY, end - start))
        drafts.extend((start + rng.uniform(0, length), project) for _ in range(size))
    drafts.sort()
    # UUIDv7 from each creation time; sorted and handed out in time order, so that id order is creation
    # order even where two artifacts share a millisecond (the random bits would decide otherwise).
    import uuid_utils

    ids = sorted(uuid.UUID(bytes=uuid_utils.uuid7(nanoseconds=int(ts * 1e9)).bytes) for ts, _ in drafts)
    rows = []
    for number, ((ts, project), artifact_id) in enumerate(zip(drafts, ids, strict=True)):
        artifact_type = rng.choices(types, type_weights)[0]
        words = [RARE_WORD] if rng.random() < 0.005 else []
        if rng.random() < 0.4:
            words.append(COMMON_WORD)
        in_title = COMMON_WORD in words and rng.random() < 0.25
        marker = " ".join(w for w in words if not (in_title and w == COMMON_WORD))
        content = make_content(rng, artifact_type, rng.randint(1000, 2000), marker)
        title = f"{TITLE_PREFIX[artifact_type]} {number % 997 + 1}: {' '.join(rng.choices(WORDS[:120], k=4))}"
        if in_title:
            title += f" ({COMMON_WORD})"
        tags = rng.sample(TAG_POOL, k=rng.randint(0, 3))
        if rng.random() < 0.3:
            tags.append(COMMON_TAG)
        if rng.random() < 0.01:
            tags.append(RARE_TAG)
        meta = {
            "confidence": round(rng.uniform(0.5, 1.0), 2),
            "validation_status": rng.choice(VALIDATION),
            "tags": tags,
            "related_artifacts": [],
            "derived_from": [],
        }
        rows.append(
            Row(
                id=artifact_id,
                project=project,
                source_agent=AGENT_OF[artifact_type],
                artifact_type=artifact_type,
                title=title,
                content=json.dumps(content),
                meta=json.dumps(meta),
                tags=tuple(tags),
                created_at=datetime.datetime.fromtimestamp(ts, datetime.UTC),
            )
        )
    for needle in (RARE_WORD, COMMON_WORD):  # the search words occur only where placed on purpose
        if any(needle in word for word in (*WORDS, *TAG_POOL, *TITLE_PREFIX.values())):
            raise BenchError(f"the vocabulary contains {needle!r}")
    return rows


async def pg_connect(dsn: str) -> Any:
    import asyncpg

    return await asyncpg.connect(dsn, timeout=10, command_timeout=LOAD_TIMEOUT_SECONDS)


async def load_rows(dsn: str, rows: list[Row], project_ids: list[uuid.UUID], *, replace: bool) -> dict[str, Any]:
    """COPY the rows into `artifact` (emptied first if `replace`), then VACUUM ANALYZE; sizes after."""
    connection = await pg_connect(dsn)
    try:
        started = time.perf_counter()
        if replace:
            await connection.execute("TRUNCATE artifact CASCADE")
        for start in range(0, len(rows), COPY_BATCH):
            records = [row.record(project_ids) for row in rows[start : start + COPY_BATCH]]
            await connection.copy_records_to_table("artifact", records=records, columns=COPY_COLUMNS)
        loaded = time.perf_counter()
        # VACUUM as autovacuum would sooner or later: visibility map and hint bits set, then statistics.
        await connection.execute("VACUUM (ANALYZE) artifact")
        vacuumed = time.perf_counter()
        stats = await connection.fetchrow(
            """SELECT count(*) AS artifacts, count(DISTINCT project_id) AS projects,
                      pg_relation_size('artifact') AS heap_bytes,
                      pg_total_relation_size('artifact') AS total_bytes,
                      pg_indexes_size('artifact') AS index_bytes,
                      avg(length(content::text))::int AS avg_content_chars,
                      avg(pg_column_size(content))::int AS avg_content_stored_bytes
               FROM artifact"""
        )
        indexes = await schema_indexes(connection)
    finally:
        await connection.close()
    return {
        **dict(stats),
        "copy_s": round(loaded - started, 2),
        "vacuum_analyze_s": round(vacuumed - loaded, 2),
        "index_sizes": {index["name"]: index["bytes"] for index in indexes},
    }


async def schema_indexes(connection: Any) -> list[dict[str, Any]]:
    """The artifact table's indexes as the migrations made them: name, definition, size."""
    found = await connection.fetch(
        """SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS definition,
                  pg_relation_size(indexrelid) AS bytes
           FROM pg_index WHERE indrelid = 'artifact'::regclass ORDER BY 1"""
    )
    return [dict(row) for row in found]


async def describe_schema(dsn: str) -> dict[str, Any]:
    """The artifact indexes and extensions of the migrated database, and which expected index is missing."""
    connection = await pg_connect(dsn)
    try:
        indexes = await schema_indexes(connection)
        extensions = await connection.fetch("SELECT extname, extversion FROM pg_extension ORDER BY 1")
        revision = await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    names = {index["name"] for index in indexes}
    return {
        "alembic_revision": revision,
        "extensions": {row["extname"]: row["extversion"] for row in extensions},
        "artifact_indexes": {index["name"]: index["definition"] for index in indexes},
        "missing_expected_indexes": [name for name in EXPECTED_INDEXES if name not in names],
    }


async def postgres_settings(dsn: str) -> dict[str, str]:
    connection = await pg_connect(dsn)
    try:
        names = (
            "server_version",
            "shared_buffers",
            "work_mem",
            "effective_cache_size",
            "random_page_cost",
            "jit",
            "max_parallel_workers_per_gather",
            "plan_cache_mode",
        )
        return {name: str(await connection.fetchval(f"SHOW {name}")) for name in names}
    finally:
        await connection.close()


# --- queries ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    name: str
    kind: str  # "list" (first page), "walk" (every page), "get" (one artifact by id), "project"
    params: dict[str, str] = field(default_factory=dict)


QUERIES = (
    Query("project (baseline)", "project"),
    Query("get by id", "get"),
    Query("list, first page", "list"),
    Query("list, all pages", "walk"),
    Query("artifact_type", "list", {"artifact_type": "system_architecture"}),
    Query("source_agent", "list", {"source_agent": "tester"}),
    Query("tag, common", "list", {"tag": COMMON_TAG}),
    Query("tag, rare", "list", {"tag": RARE_TAG}),
    Query("type + tag", "list", {"artifact_type": "source_code", "tag": COMMON_TAG}),
    Query("q, few matches", "list", {"q": RARE_WORD}),
    Query("q, many matches", "list", {"q": COMMON_WORD}),
)


def list_path(project_id: uuid.UUID, params: dict[str, str], cursor: str | None = None) -> str:
    query = httpx.QueryParams({**params, "limit": PAGE_LIMIT, **({"cursor": cursor} if cursor else {})})
    return f"/api/v1/projects/{project_id}/artifacts?{query}"


@dataclass
class Samples:
    """What a batch of requests gave: (wall-clock start, duration) of each good one, and the failures."""

    requests: list[tuple[float, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    walks: list[float] = field(default_factory=list)
    walk_totals: set[int] = field(default_factory=set)
    elapsed: float = 0.0

    @property
    def latencies(self) -> list[float]:
        return [duration for _, duration in self.requests]


async def _timed_get(client: httpx.AsyncClient, path: str, samples: Samples) -> httpx.Response | None:
    wall, t0 = time.time(), time.perf_counter()
    try:
        response = await client.get(path)
    except httpx.HTTPError as exc:
        samples.failures.append(f"{path}: {exc!r}")
        return None
    duration = time.perf_counter() - t0
    if response.status_code != 200:
        samples.failures.append(f"{path}: {response.status_code} {response.text[:200]}")
        return None
    samples.requests.append((wall, duration))
    return response


async def _closed_loop(
    clients: list[httpx.AsyncClient], paths: list[str], check: Callable[[httpx.Response], bool]
) -> Samples:
    """The clients work through `paths` together, each sending its next request when the previous answered."""
    samples = Samples()
    pending = iter(paths)
    started = time.perf_counter()

    async def run(client: httpx.AsyncClient) -> None:
        for path in pending:
            response = await _timed_get(client, path, samples)
            if response is not None and not check(response):
                samples.failures.append(f"{path}: unexpected answer {response.text[:200]}")

    await asyncio.gather(*(run(client) for client in clients))
    samples.elapsed = time.perf_counter() - started
    return samples


async def _walks(clients: list[httpx.AsyncClient], project_id: uuid.UUID, walks: int, max_pages: int) -> Samples:
    """`walks` walks through every page (cursor after cursor), spread over the clients."""
    samples = Samples()
    remaining = iter(range(walks))
    started = time.perf_counter()

    async def run(client: httpx.AsyncClient) -> None:
        for _ in remaining:
            cursor, seen, walk_started = None, 0, time.perf_counter()
            for _page in range(max_pages):
                response = await _timed_get(client, list_path(project_id, {}, cursor), samples)
                if response is None:
                    break
                body = response.json()
                seen += len(body["items"])
                cursor = body["next_cursor"]
                if cursor is None:
                    samples.walks.append(time.perf_counter() - walk_started)
                    samples.walk_totals.add(seen)
                    break
            else:
                samples.failures.append(f"more than {max_pages} pages")

    await asyncio.gather(*(run(client) for client in clients))
    samples.elapsed = time.perf_counter() - started
    return samples


def _has_content(response: httpx.Response) -> bool:
    return "content" in response.json()


def _any_body(response: httpx.Response) -> bool:
    return True


def _expect_items(expected: int) -> Callable[[httpx.Response], bool]:
    return lambda response: len(response.json()["items"]) == expected


# --- the api, with its garbage collections logged --------------------------------------------------------

# `python -m app serve`, run through runpy after registering a gc callback that logs every collection of
# the oldest generation (and any other taking more than 5 ms): the same server in the same process.
# `botarmy serve` freezes its start-up heap (gc.freeze in app.main); once the api answers /health, a
# thread writes how many objects are frozen to <log>.frozen, once: gc.get_freeze_count() walks the
# whole frozen list (~20 ms for ~190,000 objects), so calling it on every collection would stall requests.
GC_TRACE_SERVE = """
import gc, os, runpy, sys, threading, time, urllib.request
log = open(os.environ["BENCH_GC_LOG"], "a", buffering=1)
began = {}
def trace(phase, info):
    generation = info["generation"]
    if phase == "start":
        began[generation] = time.perf_counter()
        return
    took = time.perf_counter() - began.pop(generation, time.perf_counter())
    if generation == 2 or took > 0.005:
        log.write(f"{time.time():.6f} {generation} {took * 1000:.3f} {info['collected']}\\n")
def log_frozen_when_up(url):
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    with open(os.environ["BENCH_GC_LOG"] + ".frozen", "w") as out:
        out.write(str(gc.get_freeze_count()))
gc.callbacks.append(trace)
url = f"http://{sys.argv[sys.argv.index('--host') + 1]}:{sys.argv[sys.argv.index('--port') + 1]}/health"
threading.Thread(target=log_frozen_when_up, args=(url,), daemon=True).start()
sys.argv = ["app", *sys.argv[1:]]
runpy.run_module("app", run_name="__main__", alter_sys=True)
"""


def start_api_traced(env: dict[str, str], log_dir: Path, gc_log: Path) -> tuple[Process, str]:
    """As bench.status_bench.start_api, with the gc callback above."""
    port = free_port()
    args = [sys.executable, "-c", GC_TRACE_SERVE, "serve", "--host", HOST, "--port", str(port)]
    api = Process("api", args, child_env({**env, "BENCH_GC_LOG": str(gc_log)}), log_dir / "api.log")
    base_url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if api.popen.poll() is not None:
            api.stop()
            raise BenchError(f"the api exited early:\n{api.log_tail()}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return api, base_url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    api.stop()
    raise BenchError(f"the api did not become healthy within {SERVER_START_SECONDS:.0f} s:\n{api.log_tail()}")


@dataclass(frozen=True)
class Collection:
    """One logged collection: wall-clock start and end, generation."""

    start: float
    end: float
    generation: int


def read_gc_log(gc_log: Path | None) -> list[Collection]:
    """The api's logged collections."""
    if gc_log is None or not gc_log.exists():
        return []
    collections = []
    for line in gc_log.read_text().splitlines():
        ended, generation, took_ms, _collected = line.split()
        end = float(ended)
        collections.append(Collection(end - float(took_ms) / 1000, end, int(generation)))
    return collections


def api_frozen_objects(gc_log: Path) -> int | None:
    """How many objects the api had frozen once up (see GC_TRACE_SERVE)."""
    path = gc_log.with_name(gc_log.name + ".frozen")
    return int(path.read_text()) if path.exists() else None


class ClientCollections:
    """This process's own collections (gen 2, or any over 5 ms), recorded while the benchmark measures.

    A pause of the benchmark client is counted in the latency of every request in flight, so the tail
    analysis tells it from the api's. The client holds the generated data (~350,000 objects for 100,000
    artifacts) and, after the first EXPLAIN pass, the app's modules; a full collection walking them
    takes 30 ms and more, so measure_query freezes them before each measured phase (settle_client_heap).
    """

    def __init__(self) -> None:
        self.collections: list[Collection] = []
        self._began = time.perf_counter()

    def __enter__(self) -> ClientCollections:
        gc.callbacks.append(self._trace)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._trace)

    def _trace(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = time.perf_counter() - self._began
        if info["generation"] == 2 or took > 0.005:
            end = time.time()
            self.collections.append(Collection(end - took, end, info["generation"]))


def settle_client_heap() -> None:
    """Collect, then freeze whatever is still alive: it lives until the end, out of the collector's reach."""
    gc.collect()
    gc.freeze()


def gc_summary(collections: list[Collection], since: float, frozen: int | None) -> dict[str, Any]:
    """Full collections after `since` (the end of start-up): how many, how long; objects frozen."""
    gen2 = [c for c in collections if c.generation == 2 and c.start >= since]
    took = [(c.end - c.start) * 1000 for c in gen2]
    return {
        "gen2_collections": len(gen2),
        "gen2_ms_mean": round(statistics.mean(took), 1) if took else None,
        "gen2_ms_max": round(max(took), 1) if took else None,
        "frozen_objects": frozen,
    }


def tail_analysis(samples: Samples, api: list[Collection], client: list[Collection]) -> dict[str, Any]:
    """How many requests took more than the target, and how many of those overlapped a logged collection
    of the api (and of the benchmark client)."""
    slow = [(start, start + duration) for start, duration in samples.requests if duration * 1000 > TARGET_P99_MS]
    gen2 = [c for c in api if c.generation == 2]
    client_gen2 = [c for c in client if c.generation == 2]

    def overlapping(collections: list[Collection]) -> int:
        return sum(1 for a, b in slow if any(c.start < b and c.end > a for c in collections))

    return {
        "over_target": len(slow),
        "over_target_during_gc": overlapping(api),
        "over_target_during_client_gc": overlapping(client),
        "gen2_collections": len(gen2),
        "gen2_ms_max": round(max((c.end - c.start for c in gen2), default=0) * 1000, 1),
        "gen2_ms_total": round(sum(c.end - c.start for c in gen2) * 1000, 1),
        "slow_young_collections": len(api) - len(gen2),
        "client_gen2_collections": len(client_gen2),
        "client_gen2_ms_max": round(max((c.end - c.start for c in client_gen2), default=0) * 1000, 1),
    }


async def measure_query(
    bench: Bench, query: Query, project_id: uuid.UUID, rows: list[Row], concurrency: int, rng: random.Random
) -> dict[str, Any]:
    target, config = bench.target, bench.config
    matching = [row for row in rows if row.matches(query.params)] if query.kind in {"list", "walk"} else rows
    result: dict[str, Any] = {
        "query": query.name,
        "kind": query.kind,
        "params": query.params,
        "concurrency": concurrency,
    }
    if query.kind in {"list", "walk"}:
        result["matching_rows"] = len(matching)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(target.client(limits=limits)) for _ in range(concurrency)]
        if query.kind == "walk":
            pages = max(1, math.ceil(len(rows) / PAGE_LIMIT))
            await _walks(clients, project_id, 1, pages + 5)  # warm-up
            settle_client_heap()
            result["machine_busy_before_percent"] = await wait_for_quiet(config.idle_wait)
            since = time.time()
            with CpuMeter(target.groups) as cpu:
                samples = await _walks(clients, project_id, max(1, config.requests // pages), pages + 5)
            if samples.walk_totals != {len(rows)}:
                samples.failures.append(f"walks saw {sorted(samples.walk_totals)} artifacts, expected {len(rows)}")
            result.update(pages_per_walk=pages, walks=len(samples.walks), walk=summarize_ms(samples.walks))
        else:
            check: Callable[[httpx.Response], bool]
            if query.kind == "get":
                ids = [rng.choice(rows).id for _ in range(config.requests + WARMUP_REQUESTS)]
                paths = [f"/api/v1/artifacts/{artifact_id}" for artifact_id in ids]
                check = _has_content
            elif query.kind == "project":
                paths = [f"/api/v1/projects/{project_id}"] * (config.requests + WARMUP_REQUESTS)
                check = _any_body
            else:
                paths = [list_path(project_id, query.params)] * (config.requests + WARMUP_REQUESTS)
                check = _expect_items(min(PAGE_LIMIT, len(matching)))
            await _closed_loop(clients, paths[:WARMUP_REQUESTS], check)
            settle_client_heap()
            result["machine_busy_before_percent"] = await wait_for_quiet(config.idle_wait)
            since = time.time()
            with CpuMeter(target.groups) as cpu:
                samples = await _closed_loop(clients, paths[WARMUP_REQUESTS:], check)
    until = time.time()
    latencies = samples.latencies
    result.update(
        latency=summarize_ms(latencies),
        requests_ok=len(latencies),
        errors=len(samples.failures),
        failures=samples.failures[:3],
        duration_s=round(samples.elapsed, 3),
        requests_per_s=round(len(latencies) / samples.elapsed, 1) if samples.elapsed else None,
        tail=tail_analysis(
            samples,
            [c for c in read_gc_log(bench.gc_log) if since <= c.end <= until],
            [c for c in bench.client_gc.collections if since <= c.end <= until],
        ),
        cpu=cpu.result,
    )
    return result


# --- SQL: the app's own statements under EXPLAIN ANALYZE -------------------------------------------------


async def capture_statements(engine: Any, method: str, *args: Any, **kwargs: Any) -> list[tuple[str, Any]]:
    """The artifact statements (and parameters) that ArtifactService.`method`(*args, **kwargs) sends, in order."""
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.artifacts.services import ArtifactService

    captured: list[tuple[str, Any]] = []

    def listener(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        async with AsyncSession(engine) as session:
            await getattr(ArtifactService(session=session), method)(*args, **kwargs)
            await session.rollback()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)
    statements = [(s, p) for s, p in captured if "FROM artifact" in s]
    if not statements:
        raise BenchError(f"no artifact statement captured: {captured}")
    return statements


# Text search (ArtifactService.list_page with `q`) sends up to two statements per page: the walk through
# the project's first SEARCH_WINDOW rows in id order (a subquery with its own LIMIT, read only as far as
# the page needs), and, only if that walk found less than a page, the trigram-indexed search past the
# window's last id (found by a scalar subquery in the same statement). Until 3349c7f a separate
# "boundary" statement came between them. Named in the order they are sent.
SEARCH_STEPS = ("walk", "index")


def step_names(query: Query, count: int) -> list[str]:
    if "q" in query.params and count <= len(SEARCH_STEPS):
        return list(SEARCH_STEPS[:count])
    return [f"statement {i + 1}" for i in range(count)] if count > 1 else ["statement"]


def combine_steps(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """One request's SQL: every statement it sent, explained separately; times are summed over them."""
    if len(steps) == 1:
        return {**steps[0], "statements": 1}
    combined: dict[str, Any] = {"runs": steps[0]["runs"], "statements": len(steps), "steps": steps}
    for plan in ("prepared", "custom"):
        parts = [step[plan] for step in steps]
        combined[plan] = {
            "execution_ms_median": round(sum(p["execution_ms_median"] for p in parts), 3),
            "execution_ms_max": round(sum(p["execution_ms_max"] for p in parts), 3),
            "planning_ms_median": round(sum(p["planning_ms_median"] for p in parts), 3),
            "rows_fetched": [p["rows_fetched"] for p in parts],
            "plan": " | ".join(f"[{step['step']}] {p['plan']}" for step, p in zip(steps, parts, strict=True)),
            "indexes": sorted({index for p in parts for index in p["indexes"]}),
            "seq_scan": any(p["seq_scan"] for p in parts),
            "rows_removed_by_filter": sum(p["rows_removed_by_filter"] for p in parts),
            "generic": any(p["generic"] for p in parts),
            "shared_hit_blocks": sum(p["shared_hit_blocks"] or 0 for p in parts),
            "shared_read_blocks": sum(p["shared_read_blocks"] or 0 for p in parts),
            "per_step_ms": {step["step"]: p["execution_ms_median"] for step, p in zip(steps, parts, strict=True)},
        }
    return combined


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(child for sub in node.get("Plans", []) for child in _plan_nodes(sub))]


def summarize_plan(plan: dict[str, Any]) -> dict[str, Any]:
    nodes = _plan_nodes(plan["Plan"])
    steps = []
    for node in nodes:
        text = node["Node Type"]
        if "Index Name" in node:
            text += f" {node['Index Name']}"
        elif "Relation Name" in node:
            text += f" {node['Relation Name']}"
        elif "CTE Name" in node:  # the text search's window in 48c51f3 (a MATERIALIZED CTE)
            text += f" {node['CTE Name']}"
        elif "Alias" in node:  # the text search's window since then (a subquery)
            text += f" {node['Alias']}"
        removed = node.get("Rows Removed by Filter", 0) * node.get("Actual Loops", 1)
        text += f" (rows {node.get('Actual Rows', 0) * node.get('Actual Loops', 1)}"
        text += f", removed {removed})" if removed else ")"
        steps.append(text)
    return {
        "plan": " > ".join(steps),
        "indexes": sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
        "seq_scan": any(n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "artifact" for n in nodes),
        "rows_removed_by_filter": sum(n.get("Rows Removed by Filter", 0) * n.get("Actual Loops", 1) for n in nodes),
        # A generic plan (made once for any parameters) shows them as $1, $2, ...; a custom one their values.
        "generic": bool(re.search(r"\$\d", json.dumps(plan["Plan"]))),
        "shared_hit_blocks": plan["Plan"].get("Shared Hit Blocks"),
        "shared_read_blocks": plan["Plan"].get("Shared Read Blocks"),
        "jit_ms": round(plan["JIT"]["Timing"]["Total"], 3) if "JIT" in plan else None,
    }


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime.datetime):
        value = value.isoformat()
    return "'" + str(value).replace("'", "''") + "'"


async def explain_statement(pg_dsn: str, statement: str, parameters: Any, runs: int) -> dict[str, Any]:
    """The app's statement as the app runs it: prepared once per connection, then executed again and again.

    asyncpg, under SQLAlchemy, prepares every statement and keeps it per connection, and after five
    executions PostgreSQL may switch a prepared statement to a generic plan, made without the
    parameters' values (plan_cache_mode = auto). So: PREPARE, execute it SQL_WARMUP_RUNS times, then
    EXPLAIN ANALYZE EXECUTE it `runs` times, once with plan_cache_mode = auto ("prepared") and once with
    force_custom_plan ("custom": the plan for these very values, as a one-off query gets). Which of the
    two the app's connections get is decided by their plan_cache_mode (explain_scenario).
    """
    import asyncpg

    values = ", ".join(sql_literal(value) for value in (parameters or ()))
    execute = f"EXECUTE bench_statement({values})" if values else "EXECUTE bench_statement"
    explain = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {execute}"
    connection = await asyncpg.connect(pg_dsn, timeout=10, command_timeout=SQL_TIMEOUT_SECONDS)
    found: dict[str, Any] = {}
    try:
        await connection.execute(f"SET statement_timeout = '{int(SQL_TIMEOUT_SECONDS)}s'")
        for mode in ("auto", "force_custom_plan"):
            await connection.execute(f"SET plan_cache_mode = {mode}")
            await connection.execute(f"PREPARE bench_statement AS {statement}")
            fetch = []
            for i in range(SQL_WARMUP_RUNS + runs):
                t0 = time.perf_counter()
                fetched = await connection.fetch(execute)
                if i >= SQL_WARMUP_RUNS:
                    fetch.append(time.perf_counter() - t0)
            execution, planning, last = [], [], {}
            for _ in range(runs):
                last = json.loads(await connection.fetchval(explain))[0]
                execution.append(last["Execution Time"])
                planning.append(last["Planning Time"])
            await connection.execute("DEALLOCATE bench_statement")
            found["prepared" if mode == "auto" else "custom"] = {
                "execution_ms_median": round(statistics.median(execution), 3),
                "execution_ms_max": round(max(execution), 3),
                "planning_ms_median": round(statistics.median(planning), 3),
                "fetch": summarize_ms(fetch),
                "rows_fetched": len(fetched),
                **summarize_plan(last),
            }
    finally:
        await connection.close()
    return {"runs": runs, **found}


async def app_plan_cache_mode(engine: Any) -> str:
    """The plan_cache_mode of a connection made as the app makes them (connect arguments, database default)."""
    from sqlalchemy import text

    async with engine.connect() as connection:
        return str(await connection.scalar(text("SHOW plan_cache_mode")))


async def explain_scenario(
    pg_dsn: str, env: dict[str, str], project_id: uuid.UUID, rows: list[Row], config: Config, rng: random.Random
) -> dict[str, Any]:
    from app.artifacts.services import ArtifactFilters
    from app.config import load_settings
    from app.db.engine import build_db_config

    engine = build_db_config(load_settings(env).db).get_engine()  # the app's engine, connect arguments and all
    explained: dict[str, Any] = {}
    try:
        mode = await app_plan_cache_mode(engine)
        app_plan = "custom" if mode == "force_custom_plan" else "prepared"
        for query in QUERIES:
            if query.kind == "project":
                continue
            args: tuple[Any, ...]
            kwargs: dict[str, Any]
            if query.kind == "get":
                method, args, kwargs = "get_artifact", (rng.choice(rows).id,), {}
            elif query.kind == "walk":  # a page in the middle: the cursor condition
                method, args = "list_page", (project_id, ArtifactFilters())
                kwargs = {"limit": PAGE_LIMIT, "cursor": rows[len(rows) // 2].id}
            else:
                filters: dict[str, Any] = dict(query.params)
                method, args = "list_page", (project_id, ArtifactFilters(**filters))
                kwargs = {"limit": PAGE_LIMIT, "cursor": None}
            captured = await capture_statements(engine, method, *args, **kwargs)
            if "q" not in query.params:
                captured = captured[-1:]  # one statement per request (get_artifact: the artifact's own)
            steps = []
            for step, (statement, parameters) in zip(step_names(query, len(captured)), captured, strict=True):
                found = await explain_statement(pg_dsn, statement, parameters, config.explain_runs)
                found.update(step=step, statement=statement)
                found["parameters"] = [str(p) for p in parameters] if parameters else []
                steps.append(found)
            explained[query.name] = combine_steps(steps)
            explained[query.name].update(app_plan_cache_mode=mode, app=app_plan)
    finally:
        await engine.dispose()
    return explained


# --- scenarios -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    target: Target
    pg_dsn: str  # asyncpg
    env: dict[str, str]  # the api's environment: explain_scenario builds the app's engine from it
    gc_log: Path | None
    client_gc: ClientCollections
    config: Config


async def measure_scenario(bench: Bench, name: str, project_id: uuid.UUID, rows: list[Row]) -> dict[str, Any]:
    print(f"  scenario {name}: project {project_id} with {len(rows)} artifacts", flush=True)
    config = bench.config
    rng = random.Random(f"{config.seed}-{name}")
    queries = []
    for query, concurrency in itertools.product(QUERIES, config.concurrency):
        result = await measure_query(bench, query, project_id, rows, concurrency, rng)
        lat = result["latency"]
        print(
            f"    {query.name:<20}{concurrency:>3} clients  p50 {lat.get('p50_ms', math.nan):7.2f} ms"
            f"  p99 {lat.get('p99_ms', math.nan):7.2f} ms  errors {result['errors']}"
            f"  gen-2 GCs api {result['tail']['gen2_collections']} client {result['tail']['client_gen2_collections']}"
            f"  other CPU {result['cpu']['other_cpu_percent']:.0f} %",
            flush=True,
        )
        queries.append(result)
    print("    EXPLAIN ANALYZE of the app's statements …", flush=True)
    explained = await explain_scenario(bench.pg_dsn, bench.env, project_id, rows, config, rng)
    for result in queries:
        if result["query"] in explained:
            result["sql"] = explained[result["query"]]
    return {"scenario": name, "project_id": str(project_id), "project_artifacts": len(rows), "queries": queries}


async def create_projects(target: Target, count: int) -> list[uuid.UUID]:
    ids = []
    async with target.client() as client:
        for i in range(count):
            body = {"name": f"artifacts bench {i}", "description": "context store retrieval benchmark"}
            response = await client.post("/api/v1/projects/", json=body)
            if response.status_code != 201:
                raise BenchError(f"create project: {response.status_code} {response.text}")
            ids.append(uuid.UUID(response.json()["id"]))
    return ids


def size_label(count: int) -> str:
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


async def measure(bench: Bench) -> dict[str, Any]:
    config = bench.config
    rng = random.Random(config.seed)
    sizes = project_sizes(config, rng)
    project_ids = await create_projects(bench.target, config.projects)
    print(f"  {config.projects} projects created; generating {config.artifacts} artifacts …", flush=True)
    t0 = time.perf_counter()
    rows = generate_rows(sizes, rng, datetime.datetime.now(datetime.UTC))
    by_project: dict[int, list[Row]] = {}
    for row in rows:
        by_project.setdefault(row.project, []).append(row)
    settle_client_heap()  # see ClientCollections
    bench.client_gc.collections.clear()  # the collections while generating are of no concern
    print(f"  generated in {time.perf_counter() - t0:.1f} s", flush=True)
    largest = max(range(1, len(sizes)), key=sizes.__getitem__, default=0)
    scenarios = []
    loads: dict[str, Any] = {}

    small, large = size_label(config.project_size), size_label(config.artifacts)
    loads[small] = await load_rows(bench.pg_dsn, by_project[0], project_ids, replace=False)
    print(f"  loaded {loads[small]}", flush=True)
    scenarios.append(await measure_scenario(bench, small, project_ids[0], by_project[0]))

    if config.projects > 1:
        loads[large] = await load_rows(bench.pg_dsn, rows, project_ids, replace=True)  # all, in creation order
        print(f"  loaded {loads[large]}", flush=True)
        scenarios.append(await measure_scenario(bench, large, project_ids[0], by_project[0]))
        scenarios.append(await measure_scenario(bench, f"{large}-largest", project_ids[largest], by_project[largest]))
    return {
        "project_sizes": {"measured": sizes[0], "largest": sizes[largest], "smallest": min(sizes)},
        "loads": loads,
        "scenarios": scenarios,
    }


async def set_database_plan_cache_mode(pg_dsn: str, database: str, mode: str) -> None:
    """Experiment (--plan-cache-mode): the default of every new connection to the bench's own database."""
    if mode not in PLAN_CACHE_MODES:
        raise BenchError(f"plan_cache_mode {mode!r}")
    connection = await pg_connect(pg_dsn)
    try:
        await connection.execute(f'ALTER DATABASE "{database}" SET plan_cache_mode = {mode}')
    finally:
        await connection.close()


def run(config: Config) -> dict[str, Any]:
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="botarmy-bench-artifacts-") as workdir:
        log_dir = Path(workdir)
        gc_log = log_dir / "gc.log" if config.gc_trace else None
        with services_environment(info) as env:
            pg_dsn = env["DATABASE_URL"]
            if config.plan_cache_mode is not None:
                asyncio.run(set_database_plan_cache_mode(pg_dsn, info["database"], config.plan_cache_mode))
            info["postgres_settings"] = asyncio.run(postgres_settings(pg_dsn))
            info["schema"] = schema = asyncio.run(describe_schema(pg_dsn))
            print(f"  schema at {schema['alembic_revision']}: artifact indexes {sorted(schema['artifact_indexes'])}")
            if schema["missing_expected_indexes"]:
                print(f"  WARNING: the migrated schema lacks {schema['missing_expected_indexes']}", file=sys.stderr)
            token = create_admin_token(env)
            api: Process | None = None
            try:
                api, base_url = start_api_traced(env, log_dir, gc_log) if gc_log else start_api(env, log_dir)
                up = time.time()
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                target = Target(base_url, headers, {"api": api.popen.pid})
                with ClientCollections() as client_gc:
                    results = asyncio.run(measure(Bench(target, pg_dsn, env, gc_log, client_gc, config)))
                if gc_log is not None:
                    info["gc"] = gc_summary(read_gc_log(gc_log), up, api_frozen_objects(gc_log))
                info["client_gc"] = gc_summary(client_gc.collections, up, gc.get_freeze_count())
            except BaseException:
                if api is not None:
                    print(f"--- api log (tail)\n{api.log_tail()}", file=sys.stderr)
                raise
            finally:
                if api is not None:
                    api.stop()  # before the database is dropped
    return {**info, **results}


# --- report ----------------------------------------------------------------------------------------------


def _plan_text(sql: dict[str, Any]) -> str:
    if not sql:
        return ""
    text = ", ".join(index.removeprefix("ix_artifact_") for index in sql["indexes"])
    if sql["seq_scan"]:
        text += " + seq scan" if text else "seq scan"
    if sql["rows_removed_by_filter"]:
        text += f"; {sql['rows_removed_by_filter']} filtered"
    return ("generic: " if sql["generic"] else "") + text


def print_table(results: dict[str, Any]) -> None:
    print()
    print(f"GET /api/v1/projects/{{id}}/artifacts?limit={PAGE_LIMIT}&... and GET /api/v1/artifacts/{{id}}")
    print(
        "  API: latency of the measured requests; >50: requests over 50 ms (of which during a collection"
        " of the api / of the benchmark client);"
    )
    print(
        "  SQL: EXPLAIN ANALYZE execution time (median) of the app's statement(s; for q the sum over the walk,"
        " boundary and index statements it sent), prepared and re-executed with"
        " plan_cache_mode = auto (prep) and planned for its values (custom); * marks the one the app's"
        " connections get, whose plan is shown."
    )
    header = (
        f"{'scenario':<17}{'query':<19}{'cl':>3}{'match':>6}{'p50':>7}{'p99':>7}{'max':>7}{'req/s':>6}{'err':>4}"
        f"{'>50':>11}{'<50?':>5}{'prep':>8}{'custom':>8}  {'plan (app)':<52}{'api%':>5}{'pg%':>5}{'oth%':>5}"
    )
    print(header)
    print("-" * len(header))
    for scenario in results.get("scenarios", []):
        for q in scenario["queries"]:
            lat, cpu, tail = q["latency"], q["cpu"], q["tail"]
            sql = q.get("sql", {})
            prepared, custom = sql.get("prepared", {}), sql.get("custom", {})
            marks = {name: "*" if sql.get("app") == name else " " for name in ("prepared", "custom")}
            p99 = lat.get("p99_ms", math.nan)
            slow = f"{tail['over_target']}({tail['over_target_during_gc']}/{tail['over_target_during_client_gc']})"
            print(
                f"{scenario['scenario']:<17}{q['query']:<19}{q['concurrency']:>3}{q.get('matching_rows', ''):>6}"
                f"{lat.get('p50_ms', math.nan):>7.1f}{p99:>7.1f}{lat.get('max_ms', math.nan):>7.0f}"
                f"{q['requests_per_s'] or 0:>6.0f}{q['errors']:>4}{slow:>11}{'yes' if p99 < TARGET_P99_MS else 'NO':>5}"
                f"{prepared.get('execution_ms_median', math.nan):>7.2f}{marks['prepared']}"
                f"{custom.get('execution_ms_median', math.nan):>7.2f}{marks['custom']}"
                f"  {_plan_text(sql.get(sql.get('app', ''), {}))[:52]:<52}"
                f"{cpu['api_cpu_percent']:>5.0f}{cpu['postgres_cpu_percent']:>5.0f}"
                f"{cpu['other_cpu_percent']:>5.0f}"
            )
            if "q" in q["params"] and sql:
                steps = sql.get("steps") or [sql]
                text = ", ".join(
                    f"{step['step']} {step['prepared']['execution_ms_median']:.2f}"
                    f"/{step['custom']['execution_ms_median']:.2f}"
                    f" ({_plan_text(step[sql['app']])[:40]})"
                    for step in steps
                )
                print(f"{'':<17}{'  statements':<19}{len(steps):>3}  {text}")
            if q["kind"] == "walk":
                walk = q["walk"]
                print(
                    f"{'':<17}{'  whole walk':<19}{'':>3}{q['pages_per_walk']:>4}pp"
                    f"{walk.get('p50_ms', math.nan):>7.0f}{walk.get('p99_ms', math.nan):>7.0f}"
                    f"{walk.get('max_ms', math.nan):>7.0f}"
                )
    print()
    schema, sizes = results.get("schema", {}), results.get("loads", {})
    if schema:
        largest_load = list(sizes.values())[-1] if sizes else {}
        index_sizes = largest_load.get("index_sizes", {})
        print(f"Artifact indexes of the migrated schema ({schema['alembic_revision']}), size with the largest load:")
        for name, definition in schema["artifact_indexes"].items():
            size = index_sizes.get(name)
            print(f"  {name:<36}{size / 1e6 if size is not None else math.nan:>7.1f} MB  {definition}")
        if schema["missing_expected_indexes"]:
            print(f"  MISSING: {', '.join(schema['missing_expected_indexes'])}")
    for who, key in (("api", "gc"), ("benchmark client", "client_gc")):
        gc_info = results.get(key)
        if gc_info:
            print(
                f"{who} full (gen-2) collections after start-up: {gc_info['gen2_collections']}, mean"
                f" {gc_info['gen2_ms_mean']} ms, max {gc_info['gen2_ms_max']} ms;"
                f" objects frozen: {gc_info['frozen_objects']}"
            )
    print()


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench.artifacts_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=100, help="projects in the large database (1..1000)")
    parser.add_argument("--artifacts", type=int, default=100_000, help="artifacts in the large database (max 200000)")
    parser.add_argument("--project-size", type=int, default=1000, help="artifacts of the measured project")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per query (1..5000)")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated client counts (each 1..32)")
    parser.add_argument("--explain-runs", type=int, default=15, help="EXPLAIN ANALYZE runs per statement (1..100)")
    parser.add_argument(
        "--idle-wait", type=float, default=15.0, help="before each query, wait up to this long for an idle machine"
    )
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument(
        "--gc-trace",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log the api's garbage collections (python -c wrapper around `app serve`; default on)",
    )
    parser.add_argument(
        "--plan-cache-mode",
        choices=PLAN_CACHE_MODES,
        help="experiment: the bench database's default plan_cache_mode (ALTER DATABASE); default: the app's own",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.projects <= 1000:
        parser.error("--projects: 1..1000")
    if not 1 <= args.project_size <= args.artifacts <= 200_000:
        parser.error("--project-size <= --artifacts <= 200000")
    if args.projects == 1 and args.artifacts != args.project_size:
        parser.error("one project: --artifacts must equal --project-size")
    if args.artifacts - args.project_size < args.projects - 1:
        parser.error("at least one artifact per other project")
    concurrency = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    if not concurrency or not all(1 <= c <= 32 for c in concurrency):
        parser.error("--concurrency: 1..32 each")
    if not 1 <= args.requests <= 5000 or not 1 <= args.explain_runs <= 100:
        parser.error("--requests 1..5000, --explain-runs 1..100")
    if not 0 <= args.idle_wait <= 600:
        parser.error("--idle-wait: 0..600")
    return Config(
        args.projects,
        args.artifacts,
        args.project_size,
        args.requests,
        concurrency,
        args.explain_runs,
        args.idle_wait,
        args.seed,
        args.gc_trace,
        args.plan_cache_mode,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.datetime.now(datetime.UTC)
    failure = None
    results: dict[str, Any] = {}
    try:
        results = run(config)
    except Exception as exc:
        failure = str(exc) or repr(exc)
        print(f"!! failed: {failure}", file=sys.stderr)
    print_table(results)
    report = {
        "benchmark": "artifacts_bench",
        "started_at": started.isoformat(),
        "machine": machine(),
        "git_head": git_head(),
        "config": asdict(config),
        "env": BENCH_ENV,
        "target_p99_ms": TARGET_P99_MS,
        "results": results,
        "failure": failure,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"artifacts_bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results written to {path.relative_to(RESULTS_DIR.parents[1])}")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())

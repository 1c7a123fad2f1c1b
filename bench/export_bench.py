"""Does a heavy export stall the api? `/health` latency alone, then during concurrent zip exports.

    .venv/bin/python -m bench.export_bench [--mode embedded|services] [--exports 8] [--rounds 3]

A served api (`botarmy serve`) with one project of ~28 MB of generated code (58 artifacts of three
160 kB files, as tests/test_hostile.py makes), exported as a zip by a viewer token, `--exports` at
once, `--rounds` times in a row. Meanwhile one client asks `/health` every 20 ms and times it; the
same client first times `/health` alone for as many seconds, in the same run, so that the two
figures differ only by the exports. Results go to bench/results/export_bench-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.status_bench import (
    BENCH_ENV,
    RESULTS_DIR,
    _terminate,
    create_admin_token,
    git_head,
    machine,
    services_environment,
    start_api,
    summarize_ms,
)

ARTIFACTS = 58
FILES_PER_ARTIFACT = 3
FILE_BYTES = 160_000
PROBE_INTERVAL = 0.02
TARGET_P99_MS = 100.0


def big_code(index: int) -> dict[str, Any]:
    line = f"def handler_{index}(request):  # a generated line of code, of a file of a project\n"
    body = (line * (FILE_BYTES // len(line) + 1))[:FILE_BYTES]
    files = [{"path": f"pkg{index}/m{n}.py", "language": "python", "content": body} for n in range(FILES_PER_ARTIFACT)]
    return {"artifact_type": "source_code", "title": f"code {index}", "content": {"files": files}}


async def probe(client: httpx.AsyncClient, until: asyncio.Event, at_least: float) -> list[float]:
    """`/health` latencies, one request every PROBE_INTERVAL, until `until` is set and `at_least` passed."""
    latencies: list[float] = []
    began = time.monotonic()
    while not until.is_set() or time.monotonic() - began < at_least:
        started = time.perf_counter()
        response = await client.get("/health")
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"/health answered {response.status_code}")
        await asyncio.sleep(PROBE_INTERVAL)
    return latencies


async def measure(base_url: str, admin_token: str, exports: int, rounds: int) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=admin, timeout=300) as http:
        project_id = (await http.post("/api/v1/projects", json={"name": "Big"})).json()["id"]
        for index in range(ARTIFACTS):
            created = await http.post(f"/api/v1/projects/{project_id}/artifacts", json=big_code(index))
            created.raise_for_status()
        viewer = await http.post("/api/v1/tokens", json={"name": "export-viewer", "role": "viewer"})
        viewer.raise_for_status()
        viewer_headers = {"Authorization": f"Bearer {viewer.json()['token']}"}
    export_path = f"/api/v1/projects/{project_id}/documents/export?format=zip"
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=300) as prober,
        httpx.AsyncClient(base_url=base_url, timeout=300, headers=viewer_headers) as exporter,
    ):
        warm = await exporter.get(export_path)  # templates loaded, pages touched: the same for both phases
        warm.raise_for_status()
        durations: list[float] = []
        sizes: set[int] = set()
        done = asyncio.Event()
        probing = asyncio.create_task(probe(prober, done, 0))

        async def one_export() -> None:
            started = time.perf_counter()
            response = await exporter.get(export_path)
            response.raise_for_status()
            durations.append(time.perf_counter() - started)
            sizes.add(len(response.content))

        began = time.monotonic()
        for _ in range(rounds):
            await asyncio.gather(*(one_export() for _ in range(exports)))
        loaded_seconds = time.monotonic() - began
        done.set()
        loaded = await probing
        # /health alone, as long as the exports took, in the same run.
        done = asyncio.Event()
        probing = asyncio.create_task(probe(prober, done, loaded_seconds))
        done.set()
        alone = await probing
    return {
        "project_bytes": ARTIFACTS * FILES_PER_ARTIFACT * FILE_BYTES,
        "exports_at_once": exports,
        "rounds": rounds,
        "zip_bytes": sorted(sizes),
        "export_seconds": summarize_ms(durations),
        "health_alone": summarize_ms(alone),
        "health_during_exports": summarize_ms(loaded),
        "loaded_seconds": round(loaded_seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "services"], default="embedded")
    parser.add_argument("--exports", type=int, default=8, help="zip exports at once")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of exports, one after the other")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.datetime.now(datetime.UTC)
    info: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="export-bench-")))
        if args.mode == "embedded":
            env = {**BENCH_ENV, "BOTARMY_DATA_DIR": str(log_dir / "data")}
        else:
            env = stack.enter_context(services_environment(info))
        env = {**env, "BOTARMY_MAX_BODY_BYTES": str(8 * 1024 * 1024)}
        token = create_admin_token(env)
        if token is None:
            print("this build has no tokens", file=sys.stderr)
            return 2
        api, base_url = start_api(env, log_dir)
        stack.callback(api.stop)
        results = asyncio.run(measure(base_url, token, args.exports, args.rounds))
    alone, loaded = results["health_alone"], results["health_during_exports"]
    print(f"mode {args.mode}: {args.exports} zip exports at once x {args.rounds}, {results['project_bytes']} B of code")
    print(f"  /health alone:          p50 {alone['p50_ms']:8.1f} ms  p99 {alone['p99_ms']:8.1f} ms  ({alone['count']})")
    print(
        f"  /health during exports: p50 {loaded['p50_ms']:8.1f} ms  p99 {loaded['p99_ms']:8.1f} ms  ({loaded['count']})"
    )
    print(
        f"  an export: p50 {results['export_seconds']['p50_ms']:.0f} ms, "
        f"p99 {results['export_seconds']['p99_ms']:.0f} ms"
    )
    report = {
        "benchmark": "export_bench",
        "started_at": started.isoformat(),
        "git_head": git_head(),
        "machine": machine(),
        "mode": args.mode,
        "info": info,
        "target_p99_ms": TARGET_P99_MS,
        "results": results,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"export_bench-{args.mode}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results written to {path.relative_to(RESULTS_DIR.parents[1])}")
    return 0 if loaded["p99_ms"] < TARGET_P99_MS else 1


if __name__ == "__main__":
    sys.exit(main())

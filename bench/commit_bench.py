"""Benchmark of event-writing commits: how many transactions per second concurrent writers commit.

    .venv/bin/python -m bench.commit_bench --mode services|embedded|both --writers 1,8,32 --duration 5

Each writer loops: open a session, update one row of its own (a project, as a task step updates its
task), record `--events` events (`EventService.record`), commit. Writers share one project's stream,
as a busy project's tasks do. Services: a database of its own on PostgreSQL 127.0.0.1:5432 (dropped
at the end); embedded: a SQLite file in a temporary directory. Measures commits/s and the commit
latency (p50/p99) at each writer count, then checks that the event ids are 1..N without a gap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from app.config import load_settings
from app.db.engine import build_db_config, upgrade_database
from app.events.models import Event
from app.events.services import EventService
from app.projects.models import Project
from bench.status_bench import RESULTS_DIR, git_head, machine, services_environment, summarize_ms


@contextlib.contextmanager
def environment(mode: str, info: dict[str, Any]) -> Iterator[dict[str, str]]:
    if mode == "services":
        with services_environment(info) as env:
            yield env
        return
    with tempfile.TemporaryDirectory(prefix="commit-bench-") as data_dir:
        env = {"BOTARMY_DATA_DIR": data_dir, "BOTARMY_LOG_LEVEL": "WARNING"}
        upgrade_database(load_settings(env).db)
        yield env


async def run_level(env: dict[str, str], writers: int, events: int, duration: float) -> dict[str, Any]:
    config = build_db_config(load_settings(env).db)
    latencies: list[float] = []
    try:
        async with config.get_session() as session:
            projects = [Project(name=f"bench {n}") for n in range(writers)]
            session.add_all(projects)
            await session.commit()
            ids = [project.id for project in projects]
        stream = ids[0]
        stop_at = time.perf_counter() + duration

        async def writer(project_id: uuid.UUID) -> None:
            n = 0
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                async with config.get_session() as session:
                    project = await session.get_one(Project, project_id)
                    n += 1
                    project.description = f"step {n}"
                    for _ in range(events):
                        await EventService(session=session).record(
                            "project_updated",
                            project_id=stream,
                            data={"project_id": str(stream), "changes": ["description"], "status": "active"},
                        )
                    await session.commit()
                latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        await asyncio.gather(*(writer(project_id) for project_id in ids))
        elapsed = time.perf_counter() - started
        async with config.get_session() as session:
            count = int(await session.scalar(select(func.count()).select_from(Event)) or 0)
            highest = int(await session.scalar(select(func.max(Event.id))) or 0)
    finally:
        await config.get_engine().dispose()
    return {
        "writers": writers,
        "events_per_commit": events,
        "commits": len(latencies),
        "commits_per_s": round(len(latencies) / elapsed, 1),
        "events_per_s": round(len(latencies) * events / elapsed, 1),
        "commit_ms": summarize_ms(latencies),
        "event_rows": count,
        "highest_id": highest,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mode", choices=["services", "embedded", "both"], default="services")
    parser.add_argument("--writers", default="1,8,32")
    parser.add_argument("--events", type=int, default=3, help="events per commit")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per writer count")
    parser.add_argument("--label", default="", help="a note stored with the results")
    args = parser.parse_args(argv)
    modes = ["embedded", "services"] if args.mode == "both" else [args.mode]
    results: dict[str, Any] = {
        "bench": "commit_bench",
        "label": args.label,
        "commit": git_head(),
        "machine": machine(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(),
        "modes": {},
    }
    for mode in modes:
        info: dict[str, Any] = {}
        levels = []
        for writers in (int(part) for part in args.writers.split(",")):
            with environment(mode, info) as env:  # a fresh database per level: ids count from 1
                level = asyncio.run(run_level(env, writers, args.events, args.duration))
            levels.append(level)
            gapless = level["event_rows"] == level["highest_id"]
            print(
                f"{mode:9} writers={writers:3} commits/s={level['commits_per_s']:8.1f} "
                f"events/s={level['events_per_s']:8.1f} p50={level['commit_ms']['p50_ms']:6.1f} ms "
                f"p99={level['commit_ms']['p99_ms']:6.1f} ms rows={level['event_rows']} max id={level['highest_id']}"
                f"{'' if gapless else ' (ids with gaps)'}"
            )
        results["modes"][mode] = {"info": info, "levels": levels}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"commit_bench-{'-'.join(modes)}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`botarmy run "an idea"`: a whole project in one process, from the idea to documents and code on disk.

The embedded server runs in this process on a free loopback port (its database in
`DIR/.botarmy/`); the command is an ordinary client of it, the same one `botarmy watch` and
`botarmy approve` are of a remote server. It starts the workflow, shows each step as its events
arrive, puts each human request to the person at the terminal (or approves it with `--yes`), and
writes the final documents and generated source to `DIR`. Ctrl-C stops the project (the running
steps are halted and run again later) and exits; a second Ctrl-C exits at once. The same command
with `--resume` continues it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shlex
import signal
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, NoReturn

import click
import msgspec

from app.cli.client import BotArmyClient, ClientError
from app.cli.embedded import EmbeddedServer, _issue_token, embedded_server
from app.cli.terminal import Display, Terminal, answer_request
from app.config import Settings, load_settings
from app.db.engine import upgrade_database_async

STATE_DIR = ".botarmy"
STATE_FILE = "run.json"
FINISHED = ("completed", "failed", "cancelled")
# After Ctrl-C, how long the halted steps have to end (each does within about a second).
STOP_WAIT_SECONDS = 10.0


class RunState(msgspec.Struct, kw_only=True):
    """What `--resume` needs: the project and execution this folder's run made."""

    project_id: str
    execution_id: str
    idea: str
    workflow_id: str


class RunOptions(msgspec.Struct, kw_only=True, frozen=True):
    idea: str | None
    workflow_id: str
    oversight: str
    out: Path
    approve_all: bool
    resume: bool


def run_settings(out: Path, environ: dict[str, str]) -> Settings:
    """The embedded default with its database in `DIR/.botarmy/`, whatever services the shell names."""
    env = {key: value for key, value in environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env["BOTARMY_DATA_DIR"] = str(out / STATE_DIR)
    env.setdefault("BOTARMY_LOG_LEVEL", "ERROR")  # the display is the output; the log only for errors
    return load_settings(env)


def write_outputs(archive: bytes, out: Path) -> list[str]:
    """The export's documents (`docs/`) and generated files (`src/`) into `out`; the paths written."""
    written = []
    root = out.resolve()
    with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
        for member in bundle.infolist():
            target = (root / member.filename).resolve()
            if member.is_dir() or not target.is_relative_to(root):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bundle.read(member))
            written.append(member.filename)
    return written


def _load_state(out: Path) -> RunState | None:
    path = out / STATE_DIR / STATE_FILE
    if not path.is_file():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=RunState)
    except msgspec.DecodeError:
        raise click.ClickException(f"{path} is not a run's state; remove it or pick another --out") from None


def _save_state(out: Path, state: RunState) -> None:
    path = out / STATE_DIR / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(state))


async def _start_or_resume(client: BotArmyClient, options: RunOptions) -> RunState:
    previous = _load_state(options.out)
    if options.resume:
        if previous is None:
            raise click.ClickException(f"nothing to resume in {options.out}: run without --resume first")
        if (await client.project(previous.project_id))["status"] == "paused":
            await client.resume_project(previous.project_id)  # what Ctrl-C's emergency stop halted
        execution = await client.execution(previous.execution_id)
        if execution["status"] == "paused":  # paused by hand, or by an older `botarmy run`
            await client.steer(previous.execution_id, "resume")
        click.echo(f"Resuming {previous.workflow_id} on: {previous.idea}")
        return previous
    if options.idea is None or not options.idea.strip():
        raise click.ClickException('give the product idea: botarmy run "a todo list for teams"')
    if previous is not None and (await client.execution(previous.execution_id))["status"] not in FINISHED:
        raise click.ClickException(
            f"{options.out} holds an unfinished run ({previous.idea!r}): add --resume to continue it, "
            "or pick another --out"
        )
    idea = options.idea.strip()
    name = (idea.split(":")[0].split(".")[0] or idea)[:100]
    project = await client.create_project(name, idea, options.oversight)
    execution = await client.start_execution(str(project["id"]), options.workflow_id, idea)
    state = RunState(
        project_id=str(project["id"]), execution_id=str(execution["id"]), idea=idea, workflow_id=options.workflow_id
    )
    _save_state(options.out, state)
    click.echo(
        click.style("BotArmy", bold=True)
        + f" · {options.workflow_id} · oversight {options.oversight} · output in {options.out}\n"
        + f"Idea: {idea}"
    )
    return state


async def _follow(client: BotArmyClient, state: RunState, options: RunOptions, terminal: Terminal | None) -> str:
    """Show the run and answer its requests, in the order of its events, until it is over; returns
    its final status. The stream starts at the project's first event: a resumed run shows its story
    so far, and each request still pending is asked when its `hitl_request_created` comes by."""
    execution = await client.execution(state.execution_id)
    if execution["status"] in FINISHED:
        return str(execution["status"])
    display = Display(client, state.project_id, len(execution["steps"]))
    async for event in client.events(state.project_id, after=0):
        kind = event.get("event_type")
        data = event.get("data") or {}
        await display.event(event)
        if kind == "hitl_request_created":
            request = await client.hitl_context(str(data["request_id"]))
            if request["request"]["status"] == "pending":
                await answer_request(client, terminal, request["request"], options.approve_all, request)
        elif kind in ("workflow_completed", "workflow_failed", "workflow_cancelled") and (
            data.get("execution_id") == state.execution_id
        ):
            if kind == "workflow_failed":
                click.echo(click.style(f"✗ failed: {data.get('error')}", fg="red"))
            return str(kind.removeprefix("workflow_"))
    return "unknown"


def check_options(options: RunOptions) -> None:
    """What can be refused before anything starts."""
    if options.resume and _load_state(options.out) is None:
        raise click.ClickException(f"nothing to resume in {options.out}: run without --resume first")
    if not options.resume and not (options.idea or "").strip():
        raise click.ClickException('give the product idea: botarmy run "a todo list for teams"')


async def run(options: RunOptions, settings: Settings) -> int:
    check_options(options)
    options.out.mkdir(parents=True, exist_ok=True)
    await upgrade_database_async(settings.db)
    token = await _issue_token(settings)
    started = time.monotonic()
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_ctrl_c() -> None:
        if interrupted.is_set():
            _stop_at_once(options)
        interrupted.set()

    loop.add_signal_handler(signal.SIGINT, on_ctrl_c)
    # Answers come from the terminal, or from a pipe (`yes a | botarmy run ...`); --yes approves all.
    terminal = None if options.approve_all else Terminal()
    try:
        async with embedded_server(settings) as server, BotArmyClient(server.url, token) as client:
            state = await _start_or_resume(client, options)
            following = asyncio.create_task(_follow(client, state, options, terminal))
            stopping = asyncio.create_task(interrupted.wait())
            done, _ = await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClientError):
                    await following
                return await _pause(client, server, state, options)
            stopping.cancel()
            status = following.result()
            if status != "completed":
                click.echo(f"The run ended {status}.")
                return 1
            written = write_outputs(await client.export_zip(state.project_id), options.out)
            usage = (await client.usage(state.project_id))["total"]
            _summary(options.out, written, usage, time.monotonic() - started)
            return 0
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if terminal is not None:
            terminal.close()


def _continue_hint(options: RunOptions) -> str:
    return f"botarmy run --out {shlex.quote(str(options.out))} --resume" + (" --yes" if options.approve_all else "")


async def _pause(client: BotArmyClient, server: EmbeddedServer, state: RunState, options: RunOptions) -> int:
    """Ctrl-C: the project's emergency stop takes the running steps away (their model calls are
    cancelled; each is pending again, to run on --resume) and pauses the execution."""
    click.echo("\nStopping: halting the running steps (Ctrl-C again stops at once)...")
    try:
        await client.stop_project(state.project_id)
    except ClientError:  # not active (finished, or stopped already): pausing the execution is all there is
        with contextlib.suppress(ClientError):
            await client.steer(state.execution_id, "pause")
    try:
        async with asyncio.timeout(STOP_WAIT_SECONDS):
            await server.attempts_end()
    except TimeoutError:
        _stop_at_once(options)
    click.echo(f"Stopped. Continue with: {_continue_hint(options)}")
    return 130


def _stop_at_once(options: RunOptions) -> NoReturn:
    """A second Ctrl-C (or steps that would not stop): exit now. Whatever was still running was
    taken away by the stop, or its lease runs out: --resume runs it again."""
    click.echo(f"\nStopped at once. Continue with: {_continue_hint(options)}")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)  # no shutdown: it would wait for the running steps, the thing asked not to wait for


def _summary(out: Path, written: list[str], usage: dict[str, Any], seconds: float) -> None:
    documents = sorted(path for path in written if path.startswith("docs/") and path.endswith(".md"))
    sources = [path for path in written if path.startswith("src/")]
    click.echo(click.style(f"\n✓ done in {seconds:.1f} s", fg="green", bold=True))
    click.echo(f"Documents in {out / 'docs'}:")
    for path in documents:
        click.echo(f"  {path}")
    click.echo(f"Generated source: {len(sources)} files in {out / 'src'}")
    tokens = usage["tokens_in"] + usage["tokens_out"]
    click.echo(f"Model calls: {usage['calls']} · {tokens:,} tokens · ${usage['cost_usd']:.4f}")

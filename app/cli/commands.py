"""`botarmy run`, and the commands that use a running server: projects, watch, approve, reject, amend.

The server and token come from `--url`/`--token` or `BOTARMY_URL`/`BOTARMY_TOKEN`. Whatever goes
wrong is one line on standard error and a non-zero exit, never a stack trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from app.cli.client import DEFAULT_URL, BotArmyClient, ClientError
from app.config import SettingsError

T = TypeVar("T")


def _execute(action: Awaitable[T]) -> T:
    try:
        return asyncio.run(action)  # type: ignore[arg-type]
    except ClientError as exc:
        click.echo(f"botarmy: {exc}", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"botarmy: {exc.message}", err=True)
        sys.exit(1)


def _with_client(url: str, token: str | None, action: Callable[[BotArmyClient], Awaitable[T]]) -> T:
    if not token:
        click.echo("botarmy: give a token with --token or BOTARMY_TOKEN", err=True)
        sys.exit(2)

    async def main() -> T:
        async with BotArmyClient(url, token) as client:
            return await action(client)

    return _execute(main())


server_options = [
    click.option(
        "--url", envvar="BOTARMY_URL", default=DEFAULT_URL, show_default=True, help="The server (BOTARMY_URL)."
    ),
    click.option("--token", envvar="BOTARMY_TOKEN", default=None, help="An API token (BOTARMY_TOKEN)."),
]


def with_server(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(server_options):
        function = option(function)
    return function


@click.command(name="run")
@click.argument("idea", required=False)
@click.option("--workflow", "workflow_id", default="botarmy-sdlc", show_default=True, help="The workflow to run.")
@click.option(
    "--oversight",
    type=click.Choice(["high", "medium", "low"]),
    default="medium",
    show_default=True,
    help="Which phases end at a gate for your approval.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("botarmy-out"),
    show_default=True,
    help="Where the documents (docs/) and generated source (src/) go; the run's state is kept in DIR/.botarmy.",
)
@click.option("--yes", "approve_all", is_flag=True, help="Approve every request instead of asking.")
@click.option("--resume", is_flag=True, help="Continue the run that DIR holds (after Ctrl-C).")
def run_command(idea: str | None, workflow_id: str, oversight: str, out: Path, approve_all: bool, resume: bool) -> None:
    """Run a whole project in this process: from IDEA to documents and code in DIR."""
    # Only this command needs the server: the client commands start without loading it.
    from app.cli.run import RunOptions, run, run_settings  # noqa: PLC0415

    try:
        settings = run_settings(out, dict(os.environ))
    except SettingsError as exc:
        click.echo(f"botarmy: {exc}", err=True)
        sys.exit(2)
    options = RunOptions(
        idea=idea, workflow_id=workflow_id, oversight=oversight, out=out, approve_all=approve_all, resume=resume
    )
    try:
        code = _execute(run(options, settings))
    except KeyboardInterrupt:  # Ctrl-C while starting, before the run handles it itself
        click.echo("\nbotarmy: interrupted", err=True)
        sys.exit(130)
    # The outputs are written and every change committed (SQLite keeps a commit across any exit):
    # the interpreter's teardown of the whole server's modules and objects would only add most of a
    # second before the prompt comes back.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@click.command()
@with_server
def projects(url: str, token: str | None) -> None:
    """List the projects of a running server."""

    async def action(client: BotArmyClient) -> None:
        items = await client.projects()
        if not items:
            click.echo("no projects")
        for project in items:
            click.echo(f"{project['id']}  {project['status']:<10} {project['oversight_level']:<7} {project['name']}")

    _with_client(url, token, action)


@click.command()
@click.argument("project_id", required=False)
@click.option(
    "--after", type=click.IntRange(min=0), default=None, help="Start after this event id (default: live from now)."
)
@with_server
def watch(project_id: str | None, after: int | None, url: str, token: str | None) -> None:
    """Follow the live events of PROJECT (or of every project).

    A dropped connection is opened again where it stopped, so no event is lost or repeated; after
    about 2 minutes of failed tries (30 in a row) it gives up with exit code 1.
    """

    opened: list[int | None] = []

    def on_open(position: int | None) -> None:
        # On standard error: standard output is the events alone, for whatever reads them.
        where = f"after event {position}" if position is not None else "live"
        what = f"project {project_id}" if project_id else "every project"
        click.echo(f"{'reconnected' if opened else 'watching ' + what}, {where}", err=True)
        opened.append(position)

    async def action(client: BotArmyClient) -> None:
        async for event in client.events(project_id, after=after, on_open=on_open):
            data = json.dumps(event.get("data"), ensure_ascii=False, separators=(",", ":"))
            click.echo(f"{event.get('id')}  {event.get('event_type')}  {data}")

    # Ctrl-C ends a watch at once, as it does `tail -f`: nothing is left to finish or hand back.
    # Not asyncio's way (cancel the task, then close the socket with its handshake): under a loaded
    # full test run, two watches so stopped outlived the 30 s their tests gave them (cause not found).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _with_client(url, token, action)


def _answer(action_name: str) -> Callable[..., None]:
    def command(request_id: str, comment: str | None, content_file: Path | None, url: str, token: str | None) -> None:
        amended: Any = None
        if action_name == "amend":
            if content_file is None:
                click.echo("botarmy: amend needs --content-file (the corrected content, JSON or text)", err=True)
                sys.exit(2)
            text = content_file.read_text(encoding="utf-8")
            try:
                amended = json.loads(text)
            except json.JSONDecodeError:
                amended = text
        if action_name in ("reject", "amend") and not comment:
            click.echo(f"botarmy: {action_name} needs --comment", err=True)
            sys.exit(2)

        async def action(client: BotArmyClient) -> None:
            answer = await client.respond(request_id, action_name, comment=comment, amended_content=amended)
            click.echo(f"{request_id}  {answer.get('status')}")

        _with_client(url, token, action)

    return command


def _answer_command(action_name: str, help_text: str) -> click.Command:
    function = _answer(action_name)
    function = click.option("--comment", default=None, help="Why (required to reject or amend).")(function)
    if action_name == "amend":
        function = click.option(
            "--content-file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            default=None,
            help="The corrected content (JSON, or text for free-form documents).",
        )(function)
    else:
        function = click.option("--content-file", hidden=True, default=None)(function)
    function = click.argument("request_id")(function)
    return click.command(name=action_name, help=help_text)(with_server(function))


approve = _answer_command("approve", "Approve a HITL request of a running server.")
reject = _answer_command("reject", "Reject a HITL request (with --comment: the redo's feedback).")
amend = _answer_command("amend", "Amend the document a HITL request is about (--content-file, --comment).")
COMMANDS = (run_command, projects, watch, approve, reject, amend)

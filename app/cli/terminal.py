"""`botarmy run` at the terminal: each step as its events arrive, and each human request put to the
person (approve, reject with a comment, or amend a document in $EDITOR)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from app.cli.client import BotArmyClient, ClientError


class Terminal:
    """Questions at the terminal without blocking the event loop (the server runs in it)."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.reading = False

    def _readable(self) -> None:
        data = sys.stdin.readline()
        self.lines.put_nowait(data if data else None)

    async def ask(self, prompt: str) -> str:
        loop = asyncio.get_running_loop()
        if not self.reading:
            loop.add_reader(sys.stdin.fileno(), self._readable)
            self.reading = True
        click.echo(prompt, nl=False)
        line = await self.lines.get()
        if line is None:
            raise click.ClickException("standard input closed while a request waited for an answer (use --yes)")
        return line.strip()

    def close(self) -> None:
        if self.reading:
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())


class Display:
    """One line a step, its documents, and what the model calls cost so far."""

    def __init__(self, client: BotArmyClient, project_id: str, total_steps: int) -> None:
        self.client = client
        self.project_id = project_id
        self.total = total_steps

    async def event(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        kind = event.get("event_type")
        if kind == "workflow_step_started":
            runs = len(data.get("task_ids") or [])
            each = f" ({runs} runs)" if runs > 1 else ""
            click.echo(
                click.style(f"▶ {data.get('phase', '?'):<9}", fg="cyan")
                + f" step {int(data['step']) + 1}/{self.total}  {data.get('agent_type')}{each}"
            )
            for missing in data.get("missing_inputs") or []:
                click.echo(click.style(f"  ! missing input: {missing}", fg="yellow"))
        elif kind == "artifact_generated":
            click.echo(f"  ✓ {data.get('title')}  ({data.get('artifact_type')})")
        elif kind == "workflow_step_completed" and data.get("status") == "skipped":
            click.echo(click.style(f"  - step {int(data['step']) + 1} skipped: {data.get('reason')}", dim=True))
        elif kind == "workflow_step_completed":
            # As it was when the step completed: a resumed run replays its earlier steps.
            usage = (await self.client.usage(self.project_id, until=event.get("timestamp")))["total"]
            tokens = usage["tokens_in"] + usage["tokens_out"]
            spent = f"{tokens:,} tokens · ${usage['cost_usd']:.4f} so far"
            click.echo(click.style(f"  step {int(data['step']) + 1} {data.get('status')} · {spent}", dim=True))
        elif kind == "error_notification":
            click.echo(click.style(f"  ! {data.get('message')}", fg="red"))


async def answer_request(
    client: BotArmyClient,
    terminal: Terminal | None,
    request: dict[str, Any],
    approve_all: bool,
    context: dict[str, Any],
) -> None:
    """Put one human request to the person (or approve it, with --yes)."""
    request_id = str(request["request_id"])
    click.echo(click.style(f"\n? {request['kind'].replace('_', ' ')} ({request_id[-8:]})", fg="magenta", bold=True))
    click.echo(request["question"])
    for artifact in context.get("artifacts", []):
        click.echo(f"  · {artifact['title']} ({artifact['artifact_type']}, v{artifact['version']})")
    if approve_all or terminal is None:
        await client.respond(request_id, "approve", comment="approved with --yes")
        click.echo(click.style("  approved (--yes)", dim=True))
        return
    while True:
        choice = (await terminal.ask("[a]pprove, [r]eject with a comment, a[m]end a document? ")).lower()
        try:
            if choice in ("a", "approve", ""):
                await client.respond(request_id, "approve")
                click.echo("  approved")
                return
            if choice in ("r", "reject"):
                comment = await terminal.ask("comment (what to change): ")
                await client.respond(request_id, "reject", comment=comment)
                click.echo("  rejected: it will be redone with your comment")
                return
            if choice in ("m", "amend"):
                if await _amend(client, terminal, request_id, context):
                    return
                continue
        except ClientError as exc:
            click.echo(click.style(f"  not accepted: {exc}", fg="red"))
            continue
        click.echo("  answer a, r or m")


async def _amend(client: BotArmyClient, terminal: Terminal, request_id: str, context: dict[str, Any]) -> bool:
    """Open $EDITOR on a document of the request; what is saved becomes its new version."""
    artifacts = context.get("artifacts", [])
    if not artifacts:
        click.echo("  this request is about no document: approve or reject it")
        return False
    artifact = artifacts[0]
    if len(artifacts) > 1:
        for number, item in enumerate(artifacts, start=1):
            click.echo(f"  {number}. {item['title']}")
        picked = await terminal.ask(f"which one [1-{len(artifacts)}]? ")
        if not picked.isdigit() or not 1 <= int(picked) <= len(artifacts):
            return False
        artifact = artifacts[int(picked) - 1]
    before = json.dumps(artifact["content"], indent=2, ensure_ascii=False) + "\n"
    edited = await asyncio.to_thread(click.edit, before, extension=".json")
    if edited is None or edited == before:
        click.echo("  unchanged: nothing amended")
        return False
    try:
        content = json.loads(edited)
    except json.JSONDecodeError as exc:
        click.echo(click.style(f"  not JSON ({exc}): nothing amended", fg="red"))
        return False
    comment = await terminal.ask("comment (why): ") or "amended at the terminal"
    await client.respond(
        request_id, "amend", comment=comment, amended_content=content, response={"artifact_id": artifact["id"]}
    )
    click.echo(f"  amended: {artifact['title']}")
    return True

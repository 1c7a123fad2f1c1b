"""The `botarmy` command: serve, worker, db, token, and run, projects, watch, approve, reject, amend."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import uvicorn

from app.cli.commands import COMMANDS
from app.cli.tokens import token_group
from app.config import Settings, SettingsError, get_settings
from app.core.exceptions import is_schema_error, is_unavailable_error
from app.core.serving import serving_options
from app.db.engine import ensure_sqlite_directory
from app.db.schema import (
    UPGRADE_HINT,
    check_database,
    current_revisions,
    database_errors_in_one_line,
    explain_database_error,
    head_revisions,
)
from app.tokens.bootstrap import TOKEN_FILE

__version__ = version("botarmy")


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        click.echo(f"botarmy: {exc}", err=True)
        sys.exit(2)


@click.group()
def cli() -> None:
    """BotArmy: an AI software-development team as a server."""


@cli.command()
@click.option("--host", default=None, help="Interface to bind (BOTARMY_HOST, default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port to bind (BOTARMY_PORT, default 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the api (and, without REDIS_URL, the worker in the same process)."""
    settings = _settings()
    host, port = host or settings.server.host, port or settings.server.port
    _first_screen(settings, f"http://{host}:{port}")
    uvicorn.run(
        "app.main:create_served_app",
        factory=True,
        host=host,
        port=port,
        access_log=False,  # request lines could carry tokens in query strings
        ws_max_size=settings.server.ws_max_message_bytes,
        # Events are small JSON messages fanned out to many sockets: compressing each one once per
        # socket (and keeping a zlib stream per connection) costs more CPU and memory than it saves.
        ws_per_message_deflate=False,
        # Named, not "auto": the streams write live events in one pass over their sockets and rely on
        # this protocol's send writing at once unless the client's socket is backed up.
        ws="websockets-sansio",
        log_config=None,  # uvicorn's loggers go through ours, which redact secrets
        log_level=settings.app.log_level.lower(),
        lifespan="on",
        # Without a bound uvicorn waits for every request in flight, a stalled upload too.
        timeout_graceful_shutdown=max(1, round(settings.server.grace_seconds)),
        **serving_options(settings.server),  # trusted proxies, connection cap, idle and header timeouts
    )


def _first_screen(settings: Settings, url: str) -> None:
    """Where it listens, in which mode, on which database, and where the admin token is."""
    if settings.db.is_sqlite:
        mode, database = "embedded default (in-process worker, in-memory channels)", settings.db.url
    else:
        parts = urlsplit(settings.db.url)  # no user or password on the screen
        mode = "services (workers: `botarmy worker`; Redis channels)"
        database = f"{parts.scheme}://{parts.hostname}:{parts.port or 5432}{parts.path}"
    token_file = Path(settings.app.data_dir).expanduser() / TOKEN_FILE
    click.echo(
        f"\nBotArmy {__version__}  {url}\n"
        f"  console   {url}/   (sign in with a token)      API  {url}/api/v1   docs  {url}/schema\n"
        f"  mode      {mode}\n"
        f"  database  {database}\n"
        "  token     the first start of a new database makes an admin token: shown on this terminal, or in\n"
        f"            {token_file} (owner-only) when the output is not a terminal;\n"
        "            `botarmy token create --name NAME --role admin` makes another\n"
    )


@cli.command()
@click.option("--workers", default=1, show_default=True, help="Worker processes.")
def worker(workers: int) -> None:
    """Run taskiq worker processes (services mode: needs REDIS_URL)."""
    settings = _settings()
    if not settings.redis.enabled:
        click.echo(
            "botarmy: REDIS_URL is not set: on the embedded default `botarmy serve` runs tasks in-process.",
            err=True,
        )
        sys.exit(2)
    from app.worker.process import run_workers, worker_args  # noqa: PLC0415 - the api never needs the worker

    _schema_or_exit(settings)
    args = worker_args(workers, settings.worker.concurrency, settings.worker.grace_seconds)
    sys.exit(run_workers(args, settings.worker.grace_seconds))


@cli.group()
def db() -> None:
    """Database schema migrations."""


def _alembic(action: Callable[[Any], None]) -> None:
    from advanced_alchemy.alembic.commands import AlembicCommands  # noqa: PLC0415

    from app.db.engine import build_db_config, ensure_sqlite_directory  # noqa: PLC0415

    settings = _settings()
    ensure_sqlite_directory(settings.db)
    with database_errors_in_one_line():
        action(AlembicCommands(sqlalchemy_config=build_db_config(settings.db)))


def _schema_or_exit(settings: Settings) -> None:
    """A worker needs the schema at the head revision; a database that is away it waits for (it
    comes back by itself, as it would after a blip while the worker runs)."""
    try:
        asyncio.run(check_database(settings.db))
    except Exception as exc:
        line = explain_database_error(exc)
        if line is None:
            raise
        click.echo(f"botarmy: {line}", err=True)
        if not is_unavailable_error(exc) or is_schema_error(exc):
            sys.exit(1)


@db.command()
@click.option("--revision", default="head", show_default=True)
def upgrade(revision: str) -> None:
    """Migrate the database up to REVISION."""
    _alembic(lambda commands: commands.upgrade(revision=revision))
    click.echo(f"database at {revision}")


@db.command()
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Migrate the database down to REVISION."""
    _alembic(lambda commands: commands.downgrade(revision=revision))


@db.command()
def current() -> None:
    """Show the database's current revision."""
    settings = _settings()
    ensure_sqlite_directory(settings.db)
    with database_errors_in_one_line():
        revisions = asyncio.run(current_revisions(settings.db))
    if not revisions:  # Alembic itself prints nothing here, which reads as "all is well"
        click.echo(f"no revision: {UPGRADE_HINT}")
    for revision in sorted(revisions):
        click.echo(f"{revision} (head)" if revision in head_revisions() else revision)


cli.add_command(token_group(_settings))
for command in COMMANDS:
    cli.add_command(command)


def main() -> None:
    cli(prog_name="botarmy")


if __name__ == "__main__":
    main()

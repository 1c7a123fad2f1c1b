"""The `botarmy` command: serve, worker, db."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
import uvicorn

from app.config import Settings, SettingsError, get_settings
from app.core.serving import serving_options
from app.tokens.cli import token_group


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
    uvicorn.run(
        "app.main:create_served_app",
        factory=True,
        host=host or settings.server.host,
        port=port or settings.server.port,
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
        **serving_options(settings.server),  # trusted proxies, connection cap, idle and header timeouts
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
    from taskiq.cli.worker.args import WorkerArgs  # noqa: PLC0415 - the api never needs the worker CLI
    from taskiq.cli.worker.run import run_worker  # noqa: PLC0415

    args = WorkerArgs.from_cli(
        [
            "app.worker.main:broker",
            "app.worker.registry",
            "--workers",
            str(workers),
            "--max-async-tasks",
            str(settings.worker.concurrency),
            "--shutdown-timeout",
            "10",
        ]
    )
    sys.exit(run_worker(args) or 0)


@cli.group()
def db() -> None:
    """Database schema migrations."""


def _alembic(action: Callable[[Any], None]) -> None:
    from advanced_alchemy.alembic.commands import AlembicCommands  # noqa: PLC0415

    from app.db.engine import build_db_config, ensure_sqlite_directory  # noqa: PLC0415

    settings = _settings()
    ensure_sqlite_directory(settings.db)
    action(AlembicCommands(sqlalchemy_config=build_db_config(settings.db)))


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
    _alembic(lambda commands: commands.current(verbose=False))


cli.add_command(token_group(_settings))


def main() -> None:
    cli(prog_name="botarmy")


if __name__ == "__main__":
    main()

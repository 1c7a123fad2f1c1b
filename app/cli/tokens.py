"""`botarmy token create|list|revoke`: token management from the command line."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

import click

from app import models  # noqa: F401 - every mapper, so that foreign keys resolve in any process
from app.config import Settings
from app.core.security import Role
from app.db.engine import build_db_config, upgrade_database
from app.db.schema import database_errors_in_one_line, require_schema
from app.tokens.cache import RevocationNotice
from app.tokens.schemas import MAX_EXPIRES_IN_SECONDS
from app.tokens.services import TokenService

T = TypeVar("T")


def _run(settings: Settings, action: Callable[[TokenService], Awaitable[T]]) -> T:
    if settings.db.is_sqlite:
        upgrade_database(settings.db)  # the embedded default keeps its own file at the latest schema

    async def main() -> T:
        config = build_db_config(settings.db)
        try:
            await require_schema(config.get_engine())
            async with config.get_session() as session:
                return await action(TokenService(session=session))
        finally:
            await config.get_engine().dispose()

    with database_errors_in_one_line():  # an unknown token's name too (NotFoundError)
        return asyncio.run(main())


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DurationParam(click.ParamType[datetime.timedelta, Any]):
    """A duration: whole seconds, or a whole number with a unit (`30m`, `12h`, `90d`)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime.timedelta:
        if isinstance(value, datetime.timedelta):
            return value
        text = str(value).strip().lower()
        number, unit = (text[:-1], text[-1]) if text[-1:] in DURATION_UNITS else (text, "s")
        if not number.isdigit() or not 1 <= int(number) * DURATION_UNITS[unit] <= MAX_EXPIRES_IN_SECONDS:
            self.fail(f"{value!r} is not a duration such as 3600, 30m, 12h or 90d (at most ten years)", param, ctx)
        return datetime.timedelta(seconds=int(number) * DURATION_UNITS[unit])


def token_group(get_settings: Callable[[], Settings]) -> click.Group:
    @click.group(name="token")
    def token() -> None:
        """API tokens: create, list, revoke."""

    @token.command()
    @click.option("--name", required=True, help="A unique name; it is the actor in the audit log.")
    @click.option("--role", required=True, type=click.Choice([role.value for role in Role]))
    @click.option("--project", "projects", multiple=True, type=click.UUID, help="Limit to this project (repeatable).")
    @click.option(
        "--expires-in",
        type=DurationParam(),
        default=None,
        help="It expires this long from now: seconds, or a number with s, m, h or d (90d). Default: never.",
    )
    def create(name: str, role: str, projects: tuple[UUID, ...], expires_in: datetime.timedelta | None) -> None:
        """Create a token and print it: the token alone on the last line, shown only this once."""
        row, secret = _run(
            get_settings(),
            lambda tokens: tokens.issue(name, Role(role), list(projects) or None, actor="cli", expires_in=expires_in),
        )
        scope = ", ".join(row.project_ids) if row.project_ids else "every project"
        expiry = f", expires {row.expires_at.isoformat(timespec='seconds')}" if row.expires_at else ""
        click.echo(f"Token '{row.name}' ({row.role}, {scope}{expiry}) created. Keep it now: it is not shown again.")
        click.echo(secret)

    @token.command(name="list")
    def list_tokens() -> None:
        """List tokens (never their secrets)."""
        rows = _run(get_settings(), lambda tokens: tokens.list_tokens())
        click.echo(f"{'NAME':<24} {'ROLE':<14} {'STATE':<8} {'PROJECTS':<40} LAST USED")
        for row in rows:
            expired = row.expires_at is not None and row.expires_at <= datetime.datetime.now(datetime.UTC)
            state = "revoked" if row.revoked else "expired" if expired else "active"
            projects = ",".join(row.project_ids) if row.project_ids else "*"
            last_used = row.last_used_at.isoformat(timespec="seconds") if row.last_used_at else "-"
            click.echo(f"{row.name:<24} {row.role:<14} {state:<8} {projects:<40} {last_used}")

    @token.command()
    @click.argument("name")
    def revoke(name: str) -> None:
        """Revoke the token called NAME; it stops working at once."""
        settings = get_settings()
        notice = RevocationNotice(settings)
        _run(settings, lambda tokens: tokens.revoke(name=name, actor="cli", announce=notice.announce))
        click.echo(f"Token '{name}' revoked.")

    return token

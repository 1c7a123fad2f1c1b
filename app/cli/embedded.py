"""The embedded server of `botarmy run`: the api on a free loopback port in this process, and an
admin token for the command to call it with."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import click
import uvicorn

from app.config import Settings
from app.core.runtime import Runtime
from app.core.security import Role
from app.db.engine import build_db_config
from app.main import create_app
from app.tokens.services import TokenService


class _QuietServer(uvicorn.Server):
    """uvicorn in our event loop: the command handles Ctrl-C itself (pause first, then stop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EmbeddedServer:
    """The running server: its URL, and the task attempts its in-process worker runs."""

    def __init__(self, url: str, runtime: Runtime) -> None:
        self.url = url
        self.runtime = runtime

    async def attempts_end(self) -> None:
        """Once every task attempt running in this process has ended (after an emergency stop each
        sees its lease gone within half a second, cancels its model call and ends)."""
        await self.runtime.attempts.all_ended()


@contextlib.asynccontextmanager
async def embedded_server(settings: Settings) -> AsyncIterator[EmbeddedServer]:
    """The api on a free loopback port for as long as the block runs."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        log_level="error",
    )
    server = _QuietServer(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            if serving.done():
                await serving  # it failed to start: say why
                raise click.ClickException("the embedded server stopped while starting")
            await asyncio.sleep(0.02)
        yield EmbeddedServer(f"http://127.0.0.1:{port}", app.state.runtime)
    finally:
        server.should_exit = True
        await serving
        listener.close()


async def _issue_token(settings: Settings) -> str:
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            _, secret = await TokenService(session=session).issue(f"botarmy-run-{uuid.uuid4().hex[:8]}", Role.ADMIN)
            return secret
    finally:
        await config.get_engine().dispose()

"""WebSocket streams: one per project, and one for every event of the server."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import WebSocket, websocket
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath

from app.core.channels import GLOBAL_CHANNEL, project_channel
from app.core.security import Principal, Role, needs
from app.projects.models import Project
from app.worker.runtime import Runtime

# Close codes in the private range (4000-4999), mirroring the HTTP status they stand for.
CLOSE_NOT_FOUND = 4404


async def _stream(socket: WebSocket[Any, Any, Any], channels: ChannelsPlugin, names: list[str]) -> None:
    # Subscribe before accepting: once the client's handshake completes, no event can slip by.
    async with channels.start_subscription(names) as subscriber:
        await socket.accept()

        async def forward(message: bytes) -> None:
            await socket.send_text(message.decode())

        async with subscriber.run_in_background(forward, join=False):
            try:
                while True:
                    await socket.receive_data(mode="text")
            except WebSocketDisconnect:
                return


@websocket("/ws/projects/{project_id:uuid}", name="project_stream", opt=needs(Role.VIEWER))
async def project_stream(
    socket: WebSocket[Principal, Any, Any], project_id: FromPath[UUID], channels: NamedDependency[ChannelsPlugin]
) -> None:
    runtime: Runtime = socket.app.state.runtime
    async with runtime.session() as session:
        exists = socket.user.can_see(project_id) and await session.get(Project, project_id) is not None
    if not exists:
        # Accept first so that the client receives the close code and reason, not a bare 403.
        await socket.accept()
        await socket.close(code=CLOSE_NOT_FOUND, reason=f"project {project_id} does not exist")
        return
    await _stream(socket, channels, [project_channel(project_id)])


@websocket("/ws", name="global_stream", opt=needs(Role.VIEWER))
async def global_stream(socket: WebSocket[Principal, Any, Any], channels: NamedDependency[ChannelsPlugin]) -> None:
    """Every event; for a token limited to some projects, every event of those projects."""
    scope = socket.user.project_ids
    names = [GLOBAL_CHANNEL] if scope is None else [project_channel(project_id) for project_id in sorted(scope)]
    await _stream(socket, channels, names)

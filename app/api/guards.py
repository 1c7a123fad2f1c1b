"""The project scope, checked once for every route: a token limited to some projects sees no other.

A route whose path names a project (`{project_id}`) answers 404 for a project outside the caller's
scope, as if it did not exist, before its handler runs. Routes that reach a project through another
object (an artifact, a request, a task) check it where they load that object (`visible` helpers).
A WebSocket is let through: its handler accepts it and closes it with 4404, which a client can read
(a refused handshake would only say 403).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler

from app.core.security import Principal, role_guard


def project_scope_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    del handler
    if connection.scope["type"] != ScopeType.HTTP:
        return
    project_id = connection.path_params.get("project_id")
    principal = connection.scope.get("user")
    if isinstance(project_id, UUID) and isinstance(principal, Principal):
        principal.ensure_can_see(project_id)


async def access_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """The role, then the project scope: the one app-wide guard.

    One coroutine, because Litestar runs a plain function guard in a worker thread and hands each
    guard its own copy of the handler: two sync guards were two thread hops and two copies per request.
    """
    role_guard(connection, handler)
    project_scope_guard(connection, handler)

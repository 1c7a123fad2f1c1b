"""Access to every route: its role, then the project scope (`app.core.security.check_access`).

An HTTP request is checked by the authentication middleware as soon as its token is known
(`app.tokens.auth`): not as a Litestar guard, because Litestar hands each guard its own copy of the
route handler, which was 5 % of a read's CPU. A WebSocket is checked by this guard before its
handler runs, so that a refused one is still closed the way the handler closes it.

A route whose path names a project (`{project_id}`) answers 404 for a project outside the caller's
scope, as if it did not exist, before its handler runs. Routes that reach a project through another
object (an artifact, a request, a task) check it where they load that object (`visible` helpers).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.core.security import check_access


async def access_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """`check_access` as a guard, for the WebSocket routes. A coroutine: Litestar runs a plain function
    guard in a worker thread."""
    check_access(connection, handler)

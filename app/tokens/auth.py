"""The authentication middleware: a bearer token in, a `Principal` on the connection out.

HTTP requests send `Authorization: Bearer <token>`. WebSockets may send the same header or, since
browsers cannot set headers on a WebSocket, the `token` query parameter. The token is checked
before a WebSocket is accepted, so no event reaches an unauthenticated client; a refused
WebSocket is accepted and closed at once with code 4401 and the reason, which a browser can read
(a refused handshake would only show a bare 403).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import Receive, Scope, Send

from app.core.security import token_of
from app.tokens.services import TokenService
from app.worker.runtime import Runtime

CLOSE_UNAUTHORIZED = 4401
MISSING_TOKEN = "A token is required: send 'Authorization: Bearer <token>'."
BAD_TOKEN = "The token is unknown or revoked."


class TokenAuthenticationMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        secret = token_of(connection)
        if secret is None:
            raise NotAuthorizedException(MISSING_TOKEN, headers={"WWW-Authenticate": "Bearer"})
        runtime: Runtime = connection.app.state.runtime
        async with runtime.session() as session:
            principal = await TokenService(session=session).authenticate(secret)
        if principal is None:
            raise NotAuthorizedException(BAD_TOKEN, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return AuthenticationResult(user=principal, auth=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.WEBSOCKET:
            await super().__call__(scope, receive, send)
            return
        try:
            await super().__call__(scope, receive, send)
        except NotAuthorizedException as exc:
            # Only reached before the handler ran, so the socket is not accepted yet.
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
                await send({"type": "websocket.close", "code": CLOSE_UNAUTHORIZED, "reason": exc.detail})

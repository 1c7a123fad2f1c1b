"""The authentication middleware: a bearer token in, a `Principal` on the connection out.

HTTP requests send `Authorization: Bearer <token>`. WebSockets may send the same header or, since
browsers cannot set headers on a WebSocket, the `token` query parameter. The token is checked
before a WebSocket is accepted, so no event reaches an unauthenticated client; a refused
WebSocket is accepted and closed at once with code 4401 and the reason, which a browser can read
(a refused handshake would only show a bare 403); an address past its limit of failed
authentications is closed with 4429.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import Receive, Scope, Send

from app.core.ratelimit import rate_limiter_of
from app.core.runtime import Runtime
from app.core.security import token_of
from app.tokens.services import TokenService

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_MANY = 4429
MISSING_TOKEN = "A token is required: send 'Authorization: Bearer <token>'."
BAD_TOKEN = "The token is unknown or revoked."


class TokenAuthenticationMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        # The rate limiter (`app.core.ratelimit`): an address past its failure limit is refused before
        # any lookup; a failure is counted per address, a success against its token.
        limiter = rate_limiter_of(connection.scope)
        if limiter is not None:
            limiter.check_address(connection.scope)
        secret = token_of(connection)
        principal = None
        if secret is not None:
            runtime: Runtime = connection.app.state.runtime
            async with runtime.session() as session:
                principal = await TokenService(session=session).authenticate(secret)
        if principal is None:
            if limiter is not None:
                await limiter.failed(connection.scope)
            if secret is None:
                raise NotAuthorizedException(MISSING_TOKEN, headers={"WWW-Authenticate": "Bearer"})
            raise NotAuthorizedException(BAD_TOKEN, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if limiter is not None:  # a WebSocket's handshake counts too, and then each of its messages
            await limiter.count(connection.scope, principal.token_id)
        return AuthenticationResult(user=principal, auth=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.WEBSOCKET:
            await super().__call__(scope, receive, send)
            return
        try:
            await super().__call__(scope, receive, send)
        except (NotAuthorizedException, TooManyRequestsException) as exc:
            # Only reached before the handler ran, so the socket is not accepted yet.
            code = CLOSE_TOO_MANY if isinstance(exc, TooManyRequestsException) else CLOSE_UNAUTHORIZED
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
                await send({"type": "websocket.close", "code": code, "reason": exc.detail})

"""The authentication middleware: a bearer token in, a `Principal` on the connection out.

HTTP requests send `Authorization: Bearer <token>`. WebSockets may send the same header or, since
browsers cannot set headers on a WebSocket, the `token` query parameter. The token is checked
before a WebSocket is accepted, so no event reaches an unauthenticated client; a refused
WebSocket is accepted and closed at once with code 4401 and the reason, which a browser can read
(a refused handshake would only show a bare 403); an address past its limit of failed
authentications is closed with 4429.

With Redis, a token checked recently is served from this process's `TokenCache`, confirmed by the
generation of revocations that the rate-limit count reads in its own round trip (`app.tokens.cache`).
"""

from __future__ import annotations

from typing import Any, cast

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware._utils import should_bypass_middleware
from litestar.types import ASGIApp, Receive, Scope, Send

from app.core.ratelimit import LIMITER_KEY, RateLimiter, rate_limiter_of
from app.core.runtime import Runtime
from app.core.security import Principal, check_access, hash_token, token_of
from app.db.engine import reading_only
from app.tokens.cache import TokenCache
from app.tokens.revoked import RevokedTokens
from app.tokens.services import TokenService

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_MANY = 4429
MISSING_TOKEN = "A token is required: send 'Authorization: Bearer <token>'."
BAD_TOKEN = "The token is unknown, revoked or expired."


async def _from_database(app: Litestar, secret: str) -> Principal | None:
    runtime: Runtime = app.state.runtime
    async with runtime.session() as session:
        return await TokenService(session=session).authenticate(secret)


class TokenAuthenticationMiddleware(AbstractAuthenticationMiddleware):
    """Authentication, the rate limit (`limiter`: counted here, where a token is known to be valid)
    and each HTTP route's access check (`app.api.guards`), in one middleware."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter | None = None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.cache = TokenCache()
        self.limiter = limiter

    async def _check(
        self, connection: ASGIConnection[Any, Any, Any, Any], secret: str, limiter: RateLimiter | None
    ) -> tuple[Principal | None, bool]:
        """The token's principal (None: unknown, revoked or expired), and whether the request was counted."""
        token_hash = hash_token(secret)
        cached = self.cache.lookup(token_hash)
        if cached is not None and limiter is not None:
            if self.cache.confirm(await limiter.count(connection.scope, cached.token_id)):
                return cached, True
            return await _from_database(connection.app, secret), True  # a revocation meanwhile: ask again
        known_before = self.cache.generation
        principal = await _from_database(connection.app, secret)
        if principal is None or limiter is None:
            return principal, False
        self.cache.store(token_hash, principal, known_before)
        self.cache.confirm(await limiter.count(connection.scope, principal.token_id))
        return principal, True

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        # The rate limiter (`app.core.ratelimit`): an address past its failure limit is refused before
        # any lookup; a failure is counted per address, a success against its token.
        limiter = rate_limiter_of(connection.scope)
        if limiter is not None:
            limiter.check_address(connection.scope)
        secret = token_of(connection)
        principal, counted = (None, False) if secret is None else await self._check(connection, secret, limiter)
        # A revocation this process heard of (the live hub's `token_revoked`) needs no lookup either.
        revoked: RevokedTokens | None = connection.app.state.get("revoked_tokens")
        expired = principal is not None and principal.expired()  # a cached principal outlives its token
        if principal is not None and (expired or (revoked is not None and principal.token_id in revoked)):
            self.cache.forget(principal.token_id)
            principal = None
        if principal is None:
            if limiter is not None:
                await limiter.failed(connection.scope)
            if secret is None:
                raise NotAuthorizedException(MISSING_TOKEN, headers={"WWW-Authenticate": "Bearer"})
            raise NotAuthorizedException(BAD_TOKEN, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if limiter is not None and not counted:  # a WebSocket's handshake counts too, and then each of its messages
            await limiter.count(connection.scope, principal.token_id)
        if connection.scope["type"] == ScopeType.HTTP:
            # The route's access, as soon as the caller is known (`app.api.guards`).
            connection.scope["user"] = principal
            check_access(connection, connection.scope["route_handler"])
        return AuthenticationResult(user=principal, auth=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.limiter is not None:
            cast(dict[str, Any], scope)[LIMITER_KEY] = self.limiter
        if scope["type"] != ScopeType.WEBSOCKET:
            if scope.get("method") in self.exclude_http_methods and not should_bypass_middleware(
                exclude_opt_key=self.exclude_opt_key, exclude_path_pattern=self.exclude, scope=scope, scopes=self.scopes
            ):
                # Not authenticated (an OPTIONS carries no token), but the route's access applies all the same.
                check_access(ASGIConnection(scope), scope["route_handler"])
            # A GET or HEAD only reads: on SQLite its transactions take no write lock (`reading_only`).
            with reading_only(scope.get("method") in ("GET", "HEAD")):
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

"""Who is calling, and what each route lets them do.

Every route declares the role it needs in its `opt` (`opt=needs(Role.PRODUCT_OWNER)`), or is
`PUBLIC`. One app-wide guard checks it; a route that declares nothing needs `admin`, so that a
forgotten declaration fails closed. The token itself is checked by the authentication middleware
(`app.tokens.auth`), which puts a `Principal` on the connection.
"""

from __future__ import annotations

import datetime
import hashlib
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from app.core.exceptions import NotFoundError
from app.core.headers import DOCS_PREFIX

ROLE_KEY = "role"
# Litestar's authentication middleware skips handlers whose opt carries this key.
PUBLIC_KEY = "exclude_from_auth"
PUBLIC: dict[str, Any] = {PUBLIC_KEY: True}


class Role(StrEnum):
    VIEWER = "viewer"
    PRODUCT_OWNER = "product_owner"
    ADMIN = "admin"


ROLE_RANK = {Role.VIEWER: 0, Role.PRODUCT_OWNER: 1, Role.ADMIN: 2}


# A POST that computes and stores nothing (rendering a template): open to viewers, and marked so.
READ_ONLY_KEY = "read_only"


def needs(role: Role, *, read_only: bool = False) -> dict[str, Any]:
    """The `opt` of a route that needs `role` (or a higher one)."""
    return {ROLE_KEY: role, READ_ONLY_KEY: True} if read_only else {ROLE_KEY: role}


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller: one API token, its role and the projects it is limited to (None: all)."""

    token_id: UUID
    name: str
    role: Role
    project_ids: frozenset[UUID] | None = None
    expires_at: datetime.datetime | None = None  # None: never

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= datetime.datetime.now(datetime.UTC)

    def seconds_left(self) -> float | None:
        """Seconds until the token expires (None: never; 0 or less: expired)."""
        if self.expires_at is None:
            return None
        return (self.expires_at - datetime.datetime.now(datetime.UTC)).total_seconds()

    def has_role(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    @property
    def is_scoped(self) -> bool:
        return self.project_ids is not None

    def can_see(self, project_id: UUID | None) -> bool:
        if self.project_ids is None:
            return True
        return project_id is not None and project_id in self.project_ids

    def ensure_can_see(self, project_id: UUID) -> None:
        """A project outside the token's scope is reported as missing: its existence is not leaked."""
        if not self.can_see(project_id):
            raise NotFoundError(f"Project {project_id} does not exist.")


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits: a plain SHA-256 is enough, no slow hash needed.
    return hashlib.sha256(token.encode()).hexdigest()


# The web console keeps the token in this HTTP-only cookie (app/console). A cookie is sent by the
# browser on its own, so it counts only for what a cross-site page cannot make the browser do: a
# safe method, a request carrying CONSOLE_HEADER (a custom header needs a CORS preflight, which
# this server never grants for it), or a WebSocket opened from this server's own origin.
CONSOLE_COOKIE = "botarmy_token"
CONSOLE_HEADER = "x-botarmy-console"


def token_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    is_socket = connection.scope["type"] == ScopeType.WEBSOCKET
    if is_socket and (query_token := connection.query_params.get("token")):
        return str(query_token)
    cookie = connection.cookies.get(CONSOLE_COOKIE)
    if not cookie:
        return None
    if is_socket:
        origin = connection.headers.get("origin")
        return cookie if origin is None or urlsplit(origin).netloc == connection.headers.get("host") else None
    safe = connection.scope.get("method") in ("GET", "HEAD", "OPTIONS")
    return cookie if safe or CONSOLE_HEADER in connection.headers else None


def current_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal):
        raise NotAuthorizedException("A token is required: send 'Authorization: Bearer <token>'.")
    return principal


def role_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    # The OpenAPI pages are Litestar's own handlers: open by their path, like the auth middleware.
    if handler.opt.get(PUBLIC_KEY) or connection.scope["path"].startswith(DOCS_PREFIX):
        return
    principal = current_principal(connection)
    required = Role(handler.opt.get(ROLE_KEY, Role.ADMIN))
    if not principal.has_role(required):
        raise PermissionDeniedException(
            f"This needs the {required.value} role; token '{principal.name}' has the {principal.role.value} role."
        )


def project_scope_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """A route whose path names a project answers 404 for a project outside the caller's scope, as if
    it did not exist. A WebSocket is let through: its handler accepts it and closes it with 4404,
    which a client can read (a refused handshake would only say 403)."""
    del handler
    if connection.scope["type"] != ScopeType.HTTP:
        return
    project_id = connection.path_params.get("project_id")
    principal = connection.scope.get("user")
    if isinstance(project_id, UUID) and isinstance(principal, Principal):
        principal.ensure_can_see(project_id)


def check_access(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """The role, then the project scope: every route's check (`app.api.guards`)."""
    role_guard(connection, handler)
    project_scope_guard(connection, handler)


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The `principal` dependency of HTTP handlers."""
    return current_principal(request)

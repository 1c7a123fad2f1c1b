"""Security headers on every HTTP response, errors included.

A `before_send` hook, not a middleware: Litestar sends the errors raised in middleware
(401 from authentication, 429 from the rate limit) past every middleware, but never past this.
"""

from __future__ import annotations

from typing import Any

from litestar.types import Message, Scope

# The API serves JSON only: nothing in it may run script, be framed or sniffed into HTML.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-site",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
# The OpenAPI pages load their renderer's script and styles.
DOCS_PREFIX = "/schema"


# Encoded once: this runs on every response, /health included.
_ENCODED = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
_ENCODED_FOR_DOCS = [(name, value) for name, value in _ENCODED if name != b"content-security-policy"]


def encoded_security_headers() -> list[tuple[bytes, bytes]]:
    """The headers of every API response, as ASGI sends them (for an answer made outside Litestar)."""
    return list(_ENCODED)


async def add_security_headers(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start":
        return
    start: dict[str, Any] = message  # type: ignore[assignment]
    headers = start.get("headers")
    if not isinstance(headers, list):
        headers = start["headers"] = list(headers or ())
    present = {name.lower() for name, _ in headers}
    for name, value in _ENCODED_FOR_DOCS if scope["path"].startswith(DOCS_PREFIX) else _ENCODED:
        if name not in present:
            headers.append((name, value))

"""Security headers on every HTTP response, errors included.

A `before_send` hook, not a middleware: Litestar sends the errors raised in middleware
(401 from authentication, 429 from the rate limit) past every middleware, but never past this.
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
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


async def add_security_headers(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    is_docs = scope["path"].startswith(DOCS_PREFIX)
    for name, value in SECURITY_HEADERS.items():
        if is_docs and name == "Content-Security-Policy":
            continue
        if name not in headers:
            headers[name] = value

"""What the provider adapters share: HTTP status to error kind, the provider's message, no secrets."""

from __future__ import annotations

from typing import Any

from app.core.logging import redact_secret
from app.llm.base import ModelError, PermanentModelError, TransientModelError

# Error messages are cut here: enough to act on, never a whole response body.
MAX_DETAIL = 500


def str_attr(obj: object, name: str) -> str | None:
    value = getattr(obj, name, None)
    return value if isinstance(value, str) else None


def int_attr(obj: object, name: str, default: int = 0) -> int:
    value = getattr(obj, name, None)
    return value if isinstance(value, int) else default


def error_detail(body: object, fallback: str) -> str:
    """The provider's own error message from an error body, else the SDK's."""
    if isinstance(body, dict):
        error: Any = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    if isinstance(body, str) and body.strip():
        return body.strip()
    return fallback


def status_error(provider: str, status: int, detail: str) -> ModelError:
    detail = detail[:MAX_DETAIL]
    if status == 429:
        return TransientModelError(f"{provider}: HTTP 429 rate limited: {detail}", code="rate_limited", status_code=429)
    if status >= 500:
        return TransientModelError(
            f"{provider}: HTTP {status} server error: {detail}", code="server_error", status_code=status
        )
    if status == 408:
        return TransientModelError(f"{provider}: HTTP 408 request timeout: {detail}", code="timeout", status_code=408)
    if status in (401, 403):
        return PermanentModelError(
            f"{provider}: HTTP {status} authentication failed: {detail}", code="auth_failed", status_code=status
        )
    return PermanentModelError(
        f"{provider}: HTTP {status} bad request: {detail}", code="bad_request", status_code=status
    )


def redact(text: str, secret: str | None) -> str:
    """The key out of a provider's message: in any case, and any echo of part of it (`app.core.logging`)."""
    return redact_secret(text, secret)[:MAX_DETAIL]

"""What the provider adapters share: HTTP status to error kind, the provider's message, no secrets,
and the failures every SDK lets through the same way (timeouts, lost connections, unreadable answers)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pydantic

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


class ProviderErrors:
    """One provider's errors: its name in every message, its key in none, its timeout in the timeout's."""

    def __init__(self, provider: str, *, api_key: str | None, timeout: float) -> None:
        self.provider = provider
        self.api_key = api_key
        self.timeout = timeout

    def redact(self, text: str) -> str:
        return redact(text, self.api_key)

    def missing_key(self, variable: str) -> PermanentModelError:
        return PermanentModelError(f"{self.provider}: no API key configured (set {variable})", code="missing_api_key")

    def timed_out(self) -> TransientModelError:
        return TransientModelError(f"{self.provider}: no answer within {self.timeout:g}s", code="timeout")

    def connection_error(self, cause: BaseException) -> TransientModelError:
        reason = self.redact(str(cause) or type(cause).__name__)
        return TransientModelError(f"{self.provider}: connection error: {reason}", code="connection_error")

    def malformed(self, detail: str) -> PermanentModelError:
        """An answer that is not what the API promises; `detail` is quoted as it is (redact it first)."""
        return PermanentModelError(f"{self.provider}: malformed response: {detail}", code="malformed_response")

    def status(self, status: int, detail: str) -> ModelError:
        return status_error(self.provider, status, detail)

    @contextlib.contextmanager
    def transport_and_parsing(self, *unreadable: type[Exception]) -> Iterator[None]:
        """What an SDK lets through unwrapped as ModelErrors: httpx2's timeouts and transport errors
        (a stream iterator raises them as they are) and an answer that does not parse (`unreadable`:
        the SDK's own such errors). The SDK's API errors are the provider's to map, inside."""
        unreadable_answer: tuple[type[Exception], ...] = (
            *unreadable,
            json.JSONDecodeError,
            UnicodeDecodeError,
            pydantic.ValidationError,
        )
        try:
            yield
        except httpx2.TimeoutException as exc:
            raise self.timed_out() from exc
        except httpx2.TransportError as exc:
            raise self.connection_error(exc) from exc
        except unreadable_answer as exc:
            raise self.malformed(f"{type(exc).__name__}: {self.redact(str(exc))}") from exc

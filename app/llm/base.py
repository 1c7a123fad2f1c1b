"""One interface for every model provider.

A provider turns a `ModelRequest` (system prompt, user prompt, the JSON schema the answer must
follow) into a `ModelResponse` (the text and the token counts the provider reported). It makes
exactly one attempt: retries with backoff, budgets, usage records and cancellation live around it
(`app.llm.calls`), once, for every provider.

Errors are sorted into two kinds so that the caller knows whether another attempt can help:
`TransientModelError` (timeouts, connection failures, 429, 5xx) and `PermanentModelError`
(authentication, a malformed request or answer, a missing key).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True):
    system: str
    prompt: str
    # The JSON schema of the expected answer (msgspec.json.schema of the output struct).
    output_schema: dict[str, Any]
    max_output_tokens: int = 4096
    temperature: float = 0.2
    # What the offline provider derives its answer from; real providers read `prompt` instead.
    hints: dict[str, Any] = msgspec.field(default_factory=dict)


class ModelResponse(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    tokens_in: int
    tokens_out: int
    model: str


class ModelError(Exception):
    """A model call failed. `code` is short and stable (for events and HITL), the message says more."""

    def __init__(self, message: str, *, code: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status_code = status_code


class TransientModelError(ModelError):
    """Worth another attempt: timeout, connection lost, rate limited (429), server error (5xx)."""


class PermanentModelError(ModelError):
    """Another attempt would fail the same way: bad key, bad request, unusable answer."""


# Called with each piece of text as a streaming provider receives it (live output events).
OnDelta = Callable[[str], Awaitable[None]]


class ModelProvider(Protocol):
    """One attempt at one call. Implementations must not retry on their own."""

    name: str

    async def complete(self, request: ModelRequest, *, model: str, on_delta: OnDelta | None = None) -> ModelResponse:
        """Answer `request` with `model`, or raise a ModelError subclass."""
        ...

    async def aclose(self) -> None:
        """Release the provider's connections."""
        ...

"""Anthropic through the Messages API.

The system prompt goes in `system`, the user prompt as the one user message. The Messages API
has no JSON mode that takes an arbitrary schema safely, so the answer's shape comes from the
prompt (the caller describes the schema there). `temperature` is not sent: the SDK no longer
has the parameter and recent models reject it.

Streaming reads the raw event stream (`message_start`, `content_block_delta`, `message_delta`,
...), passing each text delta on and taking the usage from `message_start` / `message_delta`.
The SDK never retries (`max_retries=0`).
"""

from __future__ import annotations

import anthropic

from app.llm.base import ModelError, ModelRequest, ModelResponse, OnDelta
from app.llm.errors import ProviderErrors, error_detail, int_attr, str_attr

# Error types of the Messages API, for errors that arrive inside a stream (HTTP status 200).
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicProvider:
    """One Messages API call per `complete`, streamed when `on_delta` is given."""

    def __init__(self, *, api_key: str | None, base_url: str | None = None, timeout: float = 60.0) -> None:
        self.name = "anthropic"
        self._api_key = api_key or None
        self._errors = ProviderErrors(self.name, api_key=self._api_key, timeout=timeout)
        # Without a key the client is not built (the SDK would go looking for credentials in the
        # environment and in profiles): `complete` reports the missing key.
        self._client: anthropic.AsyncAnthropic | None = None
        if self._api_key is not None:
            self._client = anthropic.AsyncAnthropic(
                api_key=self._api_key, base_url=base_url, timeout=timeout, max_retries=0
            )

    async def aclose(self) -> None:
        """Close the connection pool (optional; the process exit does it too)."""
        if self._client is not None:
            await self._client.close()

    async def complete(self, request: ModelRequest, *, model: str, on_delta: OnDelta | None = None) -> ModelResponse:
        if self._client is None:
            raise self._errors.missing_key("ANTHROPIC_API_KEY")
        with self._errors.transport_and_parsing():
            try:
                if on_delta is None:
                    message = await self._client.messages.create(
                        model=model,
                        system=request.system,
                        messages=[{"role": "user", "content": request.prompt}],
                        max_tokens=request.max_output_tokens,
                    )
                    return self._from_message(message, model)
                return await self._stream(self._client, request, model, on_delta)
            except anthropic.APIError as exc:
                raise self._map_error(exc) from exc

    async def _stream(
        self, client: anthropic.AsyncAnthropic, request: ModelRequest, model: str, on_delta: OnDelta
    ) -> ModelResponse:
        pieces: list[str] = []
        tokens_in = 0
        tokens_out = 0
        answered_by = model
        started = False
        # The raw event stream rather than the `messages.stream()` helper: the helper's snapshot
        # bookkeeping asserts on events a broken stream may leave out.
        stream = await client.messages.create(
            model=model,
            system=request.system,
            messages=[{"role": "user", "content": request.prompt}],
            max_tokens=request.max_output_tokens,
            stream=True,
        )
        async with stream:
            async for event in stream:
                kind = getattr(event, "type", None)
                if kind == "message_start":
                    started = True
                    message = getattr(event, "message", None)
                    answered_by = str_attr(message, "model") or answered_by
                    usage = getattr(message, "usage", None)
                    tokens_in = int_attr(usage, "input_tokens", tokens_in)
                    tokens_out = int_attr(usage, "output_tokens", tokens_out)
                elif kind == "content_block_delta":
                    delta = getattr(event, "delta", None)
                    piece = str_attr(delta, "text") if getattr(delta, "type", None) == "text_delta" else None
                    if piece:
                        pieces.append(piece)
                        await on_delta(piece)
                elif kind == "message_delta":
                    # Cumulative counts: the last message_delta has the totals.
                    usage = getattr(event, "usage", None)
                    tokens_in = int_attr(usage, "input_tokens", tokens_in)
                    tokens_out = int_attr(usage, "output_tokens", tokens_out)
        if not started:
            raise self._errors.malformed("the stream had no message_start event")
        return self._response("".join(pieces), tokens_in, tokens_out, answered_by, None)

    def _from_message(self, message: object, requested_model: str) -> ModelResponse:
        # Without strict validation the SDK builds models leniently (or hands back a plain string
        # for a non-JSON body), so every field is checked here.
        blocks = getattr(message, "content", None)
        texts: list[str] = []
        if isinstance(blocks, list):
            for block in blocks:
                text = str_attr(block, "text")
                if getattr(block, "type", None) == "text" and text:
                    texts.append(text)
        usage = getattr(message, "usage", None)
        return self._response(
            "".join(texts),
            int_attr(usage, "input_tokens", 0),
            int_attr(usage, "output_tokens", 0),
            str_attr(message, "model") or requested_model,
            str_attr(message, "stop_reason"),
        )

    def _response(
        self, text: str, tokens_in: int, tokens_out: int, model: str, stop_reason: str | None
    ) -> ModelResponse:
        if not text:
            why = f" (stop_reason={stop_reason})" if stop_reason else ""
            raise self._errors.malformed(f"no text in the answer{why}")
        return ModelResponse(text=text, tokens_in=tokens_in, tokens_out=tokens_out, model=model)

    def _map_error(self, exc: anthropic.APIError) -> ModelError:
        if isinstance(exc, anthropic.APITimeoutError):
            return self._errors.timed_out()
        if isinstance(exc, anthropic.APIConnectionError):
            return self._errors.connection_error(exc.__cause__ or exc)
        if isinstance(exc, anthropic.APIResponseValidationError):
            return self._errors.malformed(self._errors.redact(exc.message))
        detail = self._errors.redact(error_detail(exc.body, exc.message))
        status = exc.status_code if isinstance(exc, anthropic.APIStatusError) else 0
        if status < 400:
            # An `error` event inside a stream that had started with HTTP 200: its type says what it was.
            status = _ERROR_TYPE_STATUS.get(_error_type(exc.body), 500)
            detail = f"{detail} (during the stream)"
        return self._errors.status(status, detail)


def _error_type(body: object) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else ""

"""OpenAI and OpenAI-compatible endpoints (Ollama, vLLM, LM Studio...) through the Chat Completions API.

One class serves both: `name="openai"` talks to api.openai.com (or `base_url`) and needs a key;
`name="openai_compatible"` talks to `base_url` and works without one (a placeholder is sent,
since the SDK insists on some key and local servers ignore it).

The answer is requested as a JSON object (`response_format={"type": "json_object"}`); the schema
itself is described in the prompt by the caller. The SDK never retries (`max_retries=0`): one call
here is one attempt, the caller owns retries.
"""

from __future__ import annotations

import openai
from openai.types.chat import ChatCompletionMessageParam

from app.llm.base import (
    ModelError,
    ModelRequest,
    ModelResponse,
    OnDelta,
    PermanentModelError,
    TransientModelError,
)
from app.llm.errors import ProviderErrors, error_detail, int_attr, str_attr

# Sent as the key to OpenAI-compatible servers that need none (the SDK refuses an empty key).
PLACEHOLDER_API_KEY = "not-needed"


class OpenAIProvider:
    """One Chat Completions call per `complete`, streamed when `on_delta` is given."""

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        timeout: float = 60.0,
        name: str = "openai",
    ) -> None:
        self.name = name
        self._api_key = api_key or None
        self._errors = ProviderErrors(self.name, api_key=self._api_key, timeout=timeout)
        key = self._api_key
        if key is None and name != "openai":
            key = PLACEHOLDER_API_KEY
        # Without a key (name="openai") the client is not built: `complete` reports the missing key.
        self._client: openai.AsyncOpenAI | None = None
        if key is not None:
            self._client = openai.AsyncOpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)

    async def aclose(self) -> None:
        """Close the connection pool (optional; the process exit does it too)."""
        if self._client is not None:
            await self._client.close()

    async def complete(self, request: ModelRequest, *, model: str, on_delta: OnDelta | None = None) -> ModelResponse:
        if self._client is None:
            raise self._errors.missing_key("OPENAI_API_KEY")
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": _system_message(request.system)},
            {"role": "user", "content": request.prompt},
        ]
        # OpenAI deprecated `max_tokens` (reasoning models reject it); compatible servers know `max_tokens` best.
        official = self.name == "openai"
        max_completion_tokens = request.max_output_tokens if official else openai.omit
        max_tokens = openai.omit if official else request.max_output_tokens
        with self._errors.transport_and_parsing():
            try:
                if on_delta is None:
                    completion = await self._client.chat.completions.create(
                        model=model,
                        messages=messages,
                        response_format={"type": "json_object"},
                        max_completion_tokens=max_completion_tokens,
                        max_tokens=max_tokens,
                        temperature=request.temperature,
                    )
                    return self._from_completion(completion, model)
                stream = await self._client.chat.completions.create(
                    model=model,
                    messages=messages,
                    response_format={"type": "json_object"},
                    max_completion_tokens=max_completion_tokens,
                    max_tokens=max_tokens,
                    temperature=request.temperature,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                pieces: list[str] = []
                usage: object = None
                answered_by = model
                async with stream:
                    async for chunk in stream:
                        answered_by = str_attr(chunk, "model") or answered_by
                        usage = getattr(chunk, "usage", None) or usage
                        piece = _delta_text(chunk)
                        if piece:
                            pieces.append(piece)
                            await on_delta(piece)
                return self._response("".join(pieces), usage, answered_by)
            except openai.APIError as exc:
                raise self._map_error(exc) from exc

    def _from_completion(self, completion: object, requested_model: str) -> ModelResponse:
        # Without strict validation the SDK builds models leniently (or hands back a plain string
        # for a non-JSON body), so every field is checked here.
        choices = getattr(completion, "choices", None)
        text: str | None = None
        refusal: str | None = None
        if isinstance(choices, list) and choices:
            message = getattr(choices[0], "message", None)
            text = str_attr(message, "content")
            refusal = str_attr(message, "refusal")
        if not text:
            detail = f"the model refused: {refusal}" if refusal else "no text in the answer"
            raise self._errors.malformed(self._errors.redact(detail))
        return self._response(
            text, getattr(completion, "usage", None), str_attr(completion, "model") or requested_model
        )

    def _response(self, text: str, usage: object, model: str) -> ModelResponse:
        if not text:
            raise self._errors.malformed("no text in the answer")
        # Some compatible servers report no usage; the call still counts, with zero tokens.
        return ModelResponse(
            text=text,
            tokens_in=int_attr(usage, "prompt_tokens"),
            tokens_out=int_attr(usage, "completion_tokens"),
            model=model,
        )

    def _map_error(self, exc: openai.APIError) -> ModelError:
        if isinstance(exc, openai.APITimeoutError):
            return self._errors.timed_out()
        if isinstance(exc, openai.APIConnectionError):
            return self._errors.connection_error(exc.__cause__ or exc)
        if isinstance(exc, openai.APIStatusError):
            return self._errors.status(exc.status_code, self._errors.redact(error_detail(exc.body, exc.message)))
        if isinstance(exc, openai.APIResponseValidationError):
            return self._errors.malformed(self._errors.redact(exc.message))
        # An error event inside a stream that had started with HTTP 200.
        detail = self._errors.redact(error_detail(exc.body, exc.message))
        kind = str(getattr(exc, "type", None) or getattr(exc, "code", None) or "")
        if "rate_limit" in kind:
            return TransientModelError(f"{self.name}: rate limited during the stream: {detail}", code="rate_limited")
        if "invalid_request" in kind:
            return PermanentModelError(f"{self.name}: request rejected during the stream: {detail}", code="bad_request")
        return TransientModelError(f"{self.name}: error during the stream: {detail}", code="server_error")


def _system_message(system: str) -> str:
    # JSON mode is refused unless the messages mention JSON; the caller's prompt normally does.
    if "json" in system.lower():
        return system
    return f"{system}\n\nAnswer with a single JSON object."


def _delta_text(chunk: object) -> str | None:
    choices = getattr(chunk, "choices", None)
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if getattr(choice, "index", 0) == 0:
            return str_attr(getattr(choice, "delta", None), "content")
    return None

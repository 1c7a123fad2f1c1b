"""Google Gemini (the Gemini Developer API) through the google-genai SDK.

`generate_content` / `generate_content_stream` with the system prompt as `system_instruction` and
`response_mime_type="application/json"`; the schema itself is described in the prompt by the
caller. Usage comes from `usage_metadata`: `prompt_token_count` in, `candidates_token_count` plus
`thoughts_token_count` (thinking is billed as output) out.

The SDK's retries are off (`HttpRetryOptions(attempts=1)`) and so is its automatic stream
continuation: one call here is one attempt. The SDK is handed its own httpx2 client so that the
transport is the same whether or not aiohttp is installed (with aiohttp the SDK would turn the
timeout into a limit on the whole call, cutting long streams) and the errors are httpx2's.
"""

from __future__ import annotations

from typing import Any

import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from app.llm.base import ModelError, ModelRequest, ModelResponse, OnDelta, PermanentModelError
from app.llm.errors import ProviderErrors, int_attr, str_attr


class GeminiProvider:
    """One generateContent call per `complete`, streamed when `on_delta` is given."""

    def __init__(self, *, api_key: str | None, base_url: str | None = None, timeout: float = 60.0) -> None:
        self.name = "gemini"
        self._api_key = api_key or None
        self._errors = ProviderErrors(self.name, api_key=self._api_key, timeout=timeout)
        # Without a key the client is not built (the SDK would read GOOGLE_API_KEY / GEMINI_API_KEY
        # itself, or raise): `complete` reports the missing key.
        self._client: genai.Client | None = None
        self._http: httpx2.AsyncClient | None = None
        if self._api_key is not None:
            self._http = httpx2.AsyncClient(timeout=timeout)
            self._client = genai.Client(
                vertexai=False,
                api_key=self._api_key,
                http_options=types.HttpOptions(
                    base_url=base_url,
                    timeout=max(1, round(timeout * 1000)),
                    retry_options=types.HttpRetryOptions(attempts=1),
                    httpx_async_client=self._http,
                ),
            )

    async def aclose(self) -> None:
        """Close the connection pool (optional; the process exit does it too)."""
        if self._client is not None:
            await self._client.aio.aclose()
            self._client.close()  # the SDK's own (unused) sync client
        if self._http is not None:
            await self._http.aclose()

    async def complete(self, request: ModelRequest, *, model: str, on_delta: OnDelta | None = None) -> ModelResponse:
        if self._client is None:
            raise self._errors.missing_key("GEMINI_API_KEY")
        config = types.GenerateContentConfig(
            system_instruction=request.system,
            response_mime_type="application/json",
            max_output_tokens=request.max_output_tokens,
            temperature=request.temperature,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            automatic_continuation=False,
        )
        with self._errors.transport_and_parsing(genai_errors.UnknownApiResponseError):
            try:
                if on_delta is None:
                    response = await self._client.aio.models.generate_content(
                        model=model, contents=request.prompt, config=config
                    )
                    return self._response(_text(response), getattr(response, "usage_metadata", None), response, model)
                pieces: list[str] = []
                usage: object = None
                last: object = None
                stream = await self._client.aio.models.generate_content_stream(
                    model=model, contents=request.prompt, config=config
                )
                async for chunk in stream:
                    last = chunk
                    usage = getattr(chunk, "usage_metadata", None) or usage
                    piece = _text(chunk)
                    if piece:
                        pieces.append(piece)
                        await on_delta(piece)
                return self._response("".join(pieces), usage, last, model)
            except genai_errors.APIError as exc:
                raise self._map_error(exc) from exc

    def _response(self, text: str, usage: object, last: object, requested_model: str) -> ModelResponse:
        if not text:
            raise self._errors.malformed(f"no text in the answer{_why_empty(last)}")
        return ModelResponse(
            text=text,
            tokens_in=int_attr(usage, "prompt_token_count"),
            tokens_out=int_attr(usage, "candidates_token_count") + int_attr(usage, "thoughts_token_count"),
            model=str_attr(last, "model_version") or requested_model,
        )

    def _map_error(self, exc: genai_errors.APIError) -> ModelError:
        detail = self._errors.redact(str(exc.message or exc.status or exc))
        status = exc.code if isinstance(exc.code, int) else 500
        # An invalid key is HTTP 400 INVALID_ARGUMENT for the Gemini API, not 401.
        if status == 400 and _is_bad_key(exc.details):
            return PermanentModelError(
                f"{self.name}: HTTP 400 authentication failed: {detail}", code="auth_failed", status_code=400
            )
        return self._errors.status(status, detail)


def _text(response: object) -> str:
    """The text parts of the first candidate, without thought summaries."""
    candidates = getattr(response, "candidates", None)
    if not isinstance(candidates, list) or not candidates:
        return ""
    parts = getattr(getattr(candidates[0], "content", None), "parts", None)
    if not isinstance(parts, list):
        return ""
    texts = []
    for part in parts:
        text = str_attr(part, "text")
        if text and not getattr(part, "thought", False):
            texts.append(text)
    return "".join(texts)


def _why_empty(response: object) -> str:
    feedback = getattr(response, "prompt_feedback", None)
    block_reason = getattr(feedback, "block_reason", None)
    if block_reason:
        return f" (prompt blocked: {block_reason})"
    candidates = getattr(response, "candidates", None)
    if isinstance(candidates, list) and candidates:
        finish_reason = getattr(candidates[0], "finish_reason", None)
        if finish_reason:
            return f" (finish_reason={finish_reason})"
    return ""


def _is_bad_key(details: Any) -> bool:
    error = details.get("error", details) if isinstance(details, dict) else None
    if not isinstance(error, dict):
        return False
    infos = error.get("details")
    if isinstance(infos, list):
        for info in infos:
            if isinstance(info, dict) and info.get("reason") == "API_KEY_INVALID":
                return True
    message = error.get("message")
    return isinstance(message, str) and "api key not valid" in message.lower()

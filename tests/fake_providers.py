"""A fake model provider: a real HTTP server on 127.0.0.1 that speaks the wire protocols of
OpenAI (and OpenAI-compatible servers), Anthropic and Gemini, and answers from a script.

    server.script([Reply('{"a": 1}', tokens_in=12, tokens_out=5), Fail(429), Fail(500), Malformed(), Hang(5)])

Each request takes the next outcome of the script (when the script is used up, `server.default`
answers: a small JSON reply), rendered in the protocol of the path it came on:

- OpenAI: `POST {openai_base_url}/chat/completions`, plain JSON or SSE (`data: {chunk}` lines,
  a usage chunk when `stream_options.include_usage`, then `data: [DONE]`);
- Anthropic: `POST {anthropic_base_url}/v1/messages`, plain JSON or its event stream
  (`message_start`, `content_block_start`, `content_block_delta`..., `content_block_stop`,
  `message_delta` with usage, `message_stop`);
- Gemini: `POST {gemini_base_url}/{v1,v1beta}/models/{model}:generateContent` and
  `:streamGenerateContent?alt=sse`.

Every request is recorded (`server.requests`: method, path, query, headers, JSON body) for tests
to check what the provider sent. The `fake_provider_server` fixture hands out one server per test
session, emptied before each test. Import it into a test module (or a conftest) to use it; it is
bound to another name so that test parameters named `fake_provider_server` do not shadow the import:

    from tests.fake_providers import fake_provider_server_fixture  # noqa: F401
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import uvicorn

WireProtocol = Literal["openai", "anthropic", "gemini"]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_GEMINI_PATH = re.compile(
    r"/v1(?:beta\d*)?/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
)


# --- the script -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A successful answer. Streamed as `chunks` (by default `text` cut in pieces of 8 characters)."""

    text: str = '{"ok": true}'
    tokens_in: int = 10
    tokens_out: int = 5
    # The model named in the answer; None echoes the requested one.
    model: str | None = None
    chunks: Sequence[str] | None = None
    # Pause between streamed chunks, in seconds.
    chunk_delay: float = 0.0

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        return [self.text[i : i + 8] for i in range(0, len(self.text), 8)] or [""]


@dataclass(frozen=True)
class Fail:
    """An error answer in the provider's error format. With `after_chunks` (streaming requests
    only) the stream starts with HTTP 200 and that many chunks of text, then carries the error
    as the provider does inside a stream."""

    status: int
    message: str | None = None
    after_chunks: int = 0
    # Gemini's ErrorInfo reason, e.g. "API_KEY_INVALID".
    reason: str | None = None

    def text(self) -> str:
        return self.message or f"fake provider error {self.status}"


@dataclass(frozen=True)
class Malformed:
    """HTTP 200 with a body the client cannot use (for a streaming request, one event with it)."""

    body: str = '{"id": "broken", "choices": [{"message": '


@dataclass(frozen=True)
class Hang:
    """Say nothing for `seconds` (ended early when the client hangs up), then answer with `then`.
    With `after_chunks` (streaming requests only) the stream starts and sends that many chunks first."""

    seconds: float
    after_chunks: int = 0
    then: Reply = field(default_factory=Reply)


Outcome = Reply | Fail | Malformed | Hang


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    # Lower-cased names.
    headers: dict[str, str]
    body: bytes
    json: Any
    protocol: WireProtocol | None
    model: str | None
    stream: bool


# --- the server -------------------------------------------------------------------------------


class FakeProviderServer:
    """The server: `start()` / `stop()` (or a `with` block), `script()`, `requests`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Outcome] = deque()
        self._requests: list[RecordedRequest] = []
        self.default: Outcome = Reply()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # The SDKs' base URL conventions: OpenAI's includes /v1, Anthropic's and Gemini's are the host.
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    @property
    def gemini_base_url(self) -> str:
        return self.base_url

    def script(self, outcomes: Iterable[Outcome]) -> None:
        """Replace the script: the next requests get these outcomes, in order."""
        with self._lock:
            self._script = deque(outcomes)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self.default = Reply()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        requests = self.requests
        assert requests, "the fake provider server received no request"
        return requests[-1]

    @property
    def remaining(self) -> int:
        """How many scripted outcomes have not been used."""
        with self._lock:
            return len(self._script)

    def start(self) -> FakeProviderServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-provider-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake provider server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeProviderServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _next(self) -> Outcome:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    # The ASGI application.
    async def _app(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        path: str = scope["path"]
        query = scope["query_string"].decode("latin-1")
        protocol, model, stream = _route(scope["method"], path, query, payload)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        with self._lock:
            self._requests.append(
                RecordedRequest(scope["method"], path, query, headers, body, payload, protocol, model, stream)
            )
        if protocol is None:
            await _send_json(send, 404, {"error": {"message": f"fake provider server: no route for {path}"}})
            return
        render = _RENDERERS[protocol](model or "unknown-model", payload if isinstance(payload, dict) else {})
        with contextlib.suppress(OSError):  # The client hung up.
            await _answer(self._next(), render, stream, receive, send)


def _route(method: str, path: str, query: str, payload: Any) -> tuple[WireProtocol | None, str | None, bool]:
    body = payload if isinstance(payload, dict) else {}
    model = body.get("model") if isinstance(body.get("model"), str) else None
    if method != "POST":
        return None, None, False
    if path.endswith("/chat/completions"):
        return "openai", model, body.get("stream") is True
    if path.endswith("/v1/messages"):
        return "anthropic", model, body.get("stream") is True
    match = _GEMINI_PATH.search(path)
    if match:
        return "gemini", match["model"], match["method"] == "streamGenerateContent"
    return None, None, False


async def _answer(outcome: Outcome, render: _Renderer, stream: bool, receive: Receive, send: Send) -> None:
    if isinstance(outcome, Reply):
        if stream:
            await _send_stream(send, render.stream(outcome), outcome.chunk_delay)
        else:
            await _send_json(send, 200, render.reply(outcome))
    elif isinstance(outcome, Fail):
        if stream and outcome.after_chunks:
            events = render.stream_head(Reply(), outcome.after_chunks)
            await _send_stream(send, [*events, render.stream_error(outcome)], 0.0)
        else:
            await _send_json(send, outcome.status, render.error(outcome))
    elif isinstance(outcome, Malformed):
        if stream:
            await _send_stream(send, [render.malformed_event(outcome.body)], 0.0)
        else:
            await _send_raw(send, 200, outcome.body.encode(), b"application/json")
    else:
        if stream and outcome.after_chunks:
            await _start_stream(send)
            for event in render.stream_head(outcome.then, outcome.after_chunks):
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if not await _wait_for_hang_up(receive, outcome.seconds):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if await _wait_for_hang_up(receive, outcome.seconds):
            return
        await _answer(outcome.then, render, stream, receive, send)


async def _wait_for_hang_up(receive: Receive, seconds: float) -> bool:
    """Wait `seconds`; True when the client disconnected meanwhile."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnected(), seconds)
    except TimeoutError:
        return False
    return True


# One connection per request: on a reused connection the clients' request body waits ~40 ms for
# the server's delayed ACK (Nagle), which would slow every test down.
_CLOSE = [(b"connection", b"close")]


async def _send_raw(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *_CLOSE]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, payload: Any) -> None:
    await _send_raw(send, status, json.dumps(payload).encode(), b"application/json")


async def _start_stream(send: Send) -> None:
    headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"), *_CLOSE]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def _send_stream(send: Send, events: Sequence[bytes], delay: float) -> None:
    await _start_stream(send)
    for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
        if delay:
            await asyncio.sleep(delay)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _data(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


# --- the three protocols ----------------------------------------------------------------------


class _Renderer:
    """How one protocol says each outcome. `payload` is the request's JSON body."""

    def __init__(self, model: str, payload: dict[str, Any]) -> None:
        self.model = model
        self.payload = payload

    def reply(self, reply: Reply) -> Any:
        raise NotImplementedError

    def stream_head(self, reply: Reply, chunks: int) -> list[bytes]:
        """The opening events and the first `chunks` text chunks of a streamed reply."""
        raise NotImplementedError

    def stream(self, reply: Reply) -> list[bytes]:
        raise NotImplementedError

    def error(self, fail: Fail) -> Any:
        raise NotImplementedError

    def stream_error(self, fail: Fail) -> bytes:
        raise NotImplementedError

    def malformed_event(self, body: str) -> bytes:
        return f"data: {body}\n\n".encode()


class _OpenAI(_Renderer):
    _ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error"}

    def _usage(self, reply: Reply) -> dict[str, int]:
        total = reply.tokens_in + reply.tokens_out
        return {"prompt_tokens": reply.tokens_in, "completion_tokens": reply.tokens_out, "total_tokens": total}

    def _chunk(self, choices: list[Any], usage: Any = None, model: str | None = None) -> bytes:
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model or self.model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if self._include_usage():
            chunk["usage"] = usage
        return _data(chunk)

    def _include_usage(self) -> bool:
        options = self.payload.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    def reply(self, reply: Reply) -> Any:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or self.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(reply),
        }

    def stream_head(self, reply: Reply, chunks: int) -> list[bytes]:
        model = reply.model or self.model
        first = {"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}, "finish_reason": None}
        events = [self._chunk([first], model=model)]
        for piece in reply.pieces()[:chunks]:
            events.append(self._chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}], model=model))
        return events

    def stream(self, reply: Reply) -> list[bytes]:
        model = reply.model or self.model
        events = self.stream_head(reply, len(reply.pieces()))
        events.append(self._chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}], model=model))
        if self._include_usage():
            events.append(self._chunk([], usage=self._usage(reply), model=model))
        events.append(b"data: [DONE]\n\n")
        return events

    def _error_object(self, fail: Fail) -> dict[str, Any]:
        kind = self._ERROR_TYPES.get(fail.status, "server_error" if fail.status >= 500 else "invalid_request_error")
        code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(fail.status)
        if fail.status == 429:
            kind = "requests"
        return {"message": fail.text(), "type": kind, "param": None, "code": code}

    def error(self, fail: Fail) -> Any:
        return {"error": self._error_object(fail)}

    def stream_error(self, fail: Fail) -> bytes:
        return _data({"error": self._error_object(fail)})


class _Anthropic(_Renderer):
    _ERROR_TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        504: "timeout_error",
        529: "overloaded_error",
    }

    @staticmethod
    def _event(kind: str, payload: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()

    def reply(self, reply: Reply) -> Any:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": reply.model or self.model,
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": reply.tokens_in, "output_tokens": reply.tokens_out},
        }

    def stream_head(self, reply: Reply, chunks: int) -> list[bytes]:
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": reply.model or self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": reply.tokens_in, "output_tokens": 1},
        }
        events = [
            self._event("message_start", {"message": message}),
            self._event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            self._event("ping", {}),
        ]
        for piece in reply.pieces()[:chunks]:
            events.append(
                self._event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
            )
        return events

    def stream(self, reply: Reply) -> list[bytes]:
        events = self.stream_head(reply, len(reply.pieces()))
        events.append(self._event("content_block_stop", {"index": 0}))
        events.append(
            self._event(
                "message_delta",
                {
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": reply.tokens_out},
                },
            )
        )
        events.append(self._event("message_stop", {}))
        return events

    def error(self, fail: Fail) -> Any:
        kind = self._ERROR_TYPES.get(fail.status, "api_error" if fail.status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": fail.text()}, "request_id": "req_fake"}

    def stream_error(self, fail: Fail) -> bytes:
        error = self.error(fail)
        return f"event: error\ndata: {json.dumps(error)}\n\n".encode()

    def malformed_event(self, body: str) -> bytes:
        return f"event: message_start\ndata: {body}\n\n".encode()


class _Gemini(_Renderer):
    _STATUSES = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }

    def _chunk(self, reply: Reply, text: str, *, last: bool, usage: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        chunk: dict[str, Any] = {
            "candidates": [candidate],
            "modelVersion": reply.model or self.model,
            "responseId": "fake-response",
        }
        if usage:
            chunk["usageMetadata"] = {
                "promptTokenCount": reply.tokens_in,
                "candidatesTokenCount": reply.tokens_out,
                "totalTokenCount": reply.tokens_in + reply.tokens_out,
            }
        else:
            chunk["usageMetadata"] = {"promptTokenCount": reply.tokens_in, "totalTokenCount": reply.tokens_in}
        return chunk

    def reply(self, reply: Reply) -> Any:
        return self._chunk(reply, reply.text, last=True, usage=True)

    def stream_head(self, reply: Reply, chunks: int) -> list[bytes]:
        pieces = reply.pieces()
        return [_data(self._chunk(reply, piece, last=False, usage=False)) for piece in pieces[:chunks]]

    def stream(self, reply: Reply) -> list[bytes]:
        pieces = reply.pieces()
        events = self.stream_head(reply, len(pieces) - 1)
        events.append(_data(self._chunk(reply, pieces[-1], last=True, usage=True)))
        return events

    def error(self, fail: Fail) -> Any:
        status = self._STATUSES.get(fail.status, "INTERNAL" if fail.status >= 500 else "FAILED_PRECONDITION")
        error: dict[str, Any] = {"code": fail.status, "message": fail.text(), "status": status}
        if fail.reason:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": fail.reason,
                    "domain": "googleapis.com",
                }
            ]
        return {"error": error}

    def stream_error(self, fail: Fail) -> bytes:
        return _data(self.error(fail))


_RENDERERS: dict[WireProtocol, type[_Renderer]] = {"openai": _OpenAI, "anthropic": _Anthropic, "gemini": _Gemini}


# --- helpers and the fixture ------------------------------------------------------------------


def unused_base_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@functools.cache
def shared_fake_provider_server() -> FakeProviderServer:
    """One server per process, started on first use, stopped at exit."""
    server = FakeProviderServer().start()
    atexit.register(server.stop)
    return server


@pytest.fixture(name="fake_provider_server")
def fake_provider_server_fixture() -> Iterator[FakeProviderServer]:
    """The shared fake provider server, with an empty script and no recorded requests."""
    server = shared_fake_provider_server()
    server.reset()
    yield server
    server.reset()

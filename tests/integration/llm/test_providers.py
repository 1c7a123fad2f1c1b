"""The model providers against the fake provider server, over real HTTP with the real SDKs.

Each provider (OpenAI, an OpenAI-compatible server, Anthropic, Gemini) must send the model,
the system and user prompts and the key the way its API expects them, return the text and the
token counts the server reported (streamed or not), make exactly one attempt, and sort every
failure into a TransientModelError or a PermanentModelError whose message never holds the key.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from app.config import AppSettings
from app.core.logging import configure_logging, redact
from app.llm.anthropic_provider import AnthropicProvider
from app.llm.base import ModelError, ModelRequest, PermanentModelError, TransientModelError
from app.llm.gemini_provider import GeminiProvider
from app.llm.openai_provider import OpenAIProvider
from tests.fake_providers import (
    Fail,
    FakeProviderServer,
    Hang,
    Malformed,
    RecordedRequest,
    Reply,
    fake_provider_server_fixture,  # noqa: F401
    unused_base_url,
)

KEY = "sk-test-Zq8sEcReT-4f1b9c2d7e"
MODEL = "test-model-1"
ANSWER = '{"title": "Brief", "items": ["one", "two", "three"]}'
REQUEST = ModelRequest(
    system="You are the analyst. Answer with JSON only.",
    prompt="Write the project brief for a to-do app.",
    output_schema={"type": "object", "properties": {"title": {"type": "string"}}},
    max_output_tokens=321,
    temperature=0.3,
)

Provider = OpenAIProvider | AnthropicProvider | GeminiProvider
Factory = Callable[..., Provider]


@dataclass(frozen=True)
class Case:
    id: str
    env_var: str | None  # named by the missing-key error; None when no key is needed

    def build(self, base_url: str, *, key: str | None, timeout: float) -> Provider:
        if self.id == "openai":
            return OpenAIProvider(api_key=key, base_url=f"{base_url}/v1", timeout=timeout)
        if self.id == "openai_compatible":
            return OpenAIProvider(api_key=key, base_url=f"{base_url}/v1", timeout=timeout, name="openai_compatible")
        if self.id == "anthropic":
            return AnthropicProvider(api_key=key, base_url=base_url, timeout=timeout)
        return GeminiProvider(api_key=key, base_url=base_url, timeout=timeout)

    def sent(self, request: RecordedRequest) -> tuple[str | None, str, str, str | None]:
        """(model, system prompt, user prompt, key) as the request carried them."""
        body: dict[str, Any] = request.json
        if self.id.startswith("openai"):
            system, user = body["messages"]
            assert (system["role"], user["role"]) == ("system", "user")
            return body["model"], system["content"], user["content"], _bearer(request)
        if self.id == "anthropic":
            (user,) = body["messages"]
            assert user["role"] == "user"
            return body["model"], body["system"], user["content"], request.headers.get("x-api-key") or _bearer(request)
        (content,) = body["contents"]
        return (
            request.model,
            body["systemInstruction"]["parts"][0]["text"],
            content["parts"][0]["text"],
            request.headers.get("x-goog-api-key"),
        )

    def check_parameters(self, body: dict[str, Any]) -> None:
        if self.id == "openai":
            assert body["response_format"] == {"type": "json_object"}
            assert body["max_completion_tokens"] == 321
            assert body["temperature"] == 0.3
        elif self.id == "openai_compatible":
            assert body["response_format"] == {"type": "json_object"}
            assert body["max_tokens"] == 321
            assert body["temperature"] == 0.3
        elif self.id == "anthropic":
            assert body["max_tokens"] == 321
            assert "temperature" not in body  # deprecated by the API, gone from the SDK
        else:
            config = body["generationConfig"]
            assert config["responseMimeType"] == "application/json"
            assert config["maxOutputTokens"] == 321
            assert config["temperature"] == 0.3


def _bearer(request: RecordedRequest) -> str | None:
    value = request.headers.get("authorization", "")
    return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None


CASES = [
    Case("openai", "OPENAI_API_KEY"),
    Case("openai_compatible", None),
    Case("anthropic", "ANTHROPIC_API_KEY"),
    Case("gemini", "GEMINI_API_KEY"),
]
KEYED_CASES = [case for case in CASES if case.env_var]


@pytest.fixture(params=CASES, ids=lambda case: case.id)
def case(request: pytest.FixtureRequest) -> Case:
    result: Case = request.param
    return result


@pytest.fixture
async def make(fake_provider_server: FakeProviderServer) -> AsyncIterator[Callable[..., Provider]]:
    """Build a provider (against the fake server unless told otherwise); closed after the test."""
    built: list[Provider] = []

    def build(case: Case, *, key: str | None = KEY, timeout: float = 5.0, base_url: str | None = None) -> Provider:
        provider = case.build(base_url or fake_provider_server.base_url, key=key, timeout=timeout)
        built.append(provider)
        return provider

    yield build
    for provider in built:
        await provider.aclose()


class Deltas:
    def __init__(self) -> None:
        self.pieces: list[str] = []

    async def __call__(self, piece: str) -> None:
        self.pieces.append(piece)


async def _fails(call: Awaitable[object]) -> ModelError:
    with pytest.raises(ModelError) as info:
        await call
    error = info.value
    assert KEY not in str(error)
    assert KEY not in repr(error.args)
    return error


# --- success ----------------------------------------------------------------------------------


async def test_answer_and_usage(case: Case, make: Factory, fake_provider_server: FakeProviderServer) -> None:
    fake_provider_server.script([Reply(ANSWER, tokens_in=12, tokens_out=5)])
    provider = make(case)

    response = await provider.complete(REQUEST, model=MODEL)

    assert provider.name == case.id
    assert (response.text, response.tokens_in, response.tokens_out, response.model) == (ANSWER, 12, 5, MODEL)
    (sent,) = fake_provider_server.requests
    assert not sent.stream
    model, system, prompt, key = case.sent(sent)
    assert model == MODEL
    assert REQUEST.system in system
    assert prompt == REQUEST.prompt
    assert key == KEY
    case.check_parameters(sent.json)


async def test_model_named_by_the_answer(case: Case, make: Factory, fake_provider_server: FakeProviderServer) -> None:
    fake_provider_server.script([Reply(ANSWER, model="test-model-1-2025-06-01")])

    response = await make(case).complete(REQUEST, model=MODEL)

    assert response.model == "test-model-1-2025-06-01"


async def test_streaming(case: Case, make: Factory, fake_provider_server: FakeProviderServer) -> None:
    chunks = ['{"title": ', '"Brief", ', '"items": ["one", ', '"two", "three"]}']
    fake_provider_server.script([Reply(ANSWER, tokens_in=40, tokens_out=17, chunks=chunks, chunk_delay=0.01)])
    deltas = Deltas()

    response = await make(case).complete(REQUEST, model=MODEL, on_delta=deltas)

    assert deltas.pieces == chunks
    assert (response.text, response.tokens_in, response.tokens_out, response.model) == (ANSWER, 40, 17, MODEL)
    (sent,) = fake_provider_server.requests
    assert sent.stream
    model, system, prompt, key = case.sent(sent)
    assert (model, prompt, key) == (MODEL, REQUEST.prompt, KEY)
    assert REQUEST.system in system
    case.check_parameters(sent.json)
    if case.id.startswith("openai"):
        assert sent.json["stream_options"] == {"include_usage": True}
    if case.id == "gemini":
        assert sent.query == "alt=sse"


async def test_slow_answer_within_the_timeout(
    case: Case, make: Factory, fake_provider_server: FakeProviderServer
) -> None:
    fake_provider_server.script([Hang(0.2, then=Reply(ANSWER, tokens_in=3, tokens_out=4))])

    response = await make(case, timeout=3.0).complete(REQUEST, model=MODEL)

    assert (response.text, response.tokens_in, response.tokens_out) == (ANSWER, 3, 4)


async def test_openai_json_mode_is_named_in_the_system_message(
    make: Factory, fake_provider_server: FakeProviderServer
) -> None:
    # OpenAI refuses JSON mode unless a message mentions JSON.
    request = ModelRequest(system="You are the analyst.", prompt="Write the brief.", output_schema={})

    await make(Case("openai", "OPENAI_API_KEY")).complete(request, model=MODEL)

    system = fake_provider_server.last_request.json["messages"][0]["content"]
    assert system.startswith("You are the analyst.")
    assert "JSON" in system


async def test_openai_compatible_needs_no_key(make: Factory, fake_provider_server: FakeProviderServer) -> None:
    fake_provider_server.script([Reply(ANSWER)])

    response = await make(Case("openai_compatible", None), key=None).complete(REQUEST, model="llama3.2")

    assert response.text == ANSWER
    assert fake_provider_server.last_request.headers["authorization"] == "Bearer not-needed"


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "code", "stream"),
    [
        pytest.param(429, TransientModelError, "rate_limited", False, id="429"),
        pytest.param(429, TransientModelError, "rate_limited", True, id="429-stream"),
        pytest.param(500, TransientModelError, "server_error", False, id="500"),
        pytest.param(500, TransientModelError, "server_error", True, id="500-stream"),
        pytest.param(503, TransientModelError, "server_error", False, id="503"),
        pytest.param(401, PermanentModelError, "auth_failed", False, id="401"),
        pytest.param(401, PermanentModelError, "auth_failed", True, id="401-stream"),
        pytest.param(403, PermanentModelError, "auth_failed", False, id="403"),
        pytest.param(400, PermanentModelError, "bad_request", False, id="400"),
        pytest.param(404, PermanentModelError, "bad_request", False, id="404"),
    ],
)
async def test_http_errors(
    case: Case,
    make: Factory,
    fake_provider_server: FakeProviderServer,
    stream: bool,
    status: int,
    kind: type[ModelError],
    code: str,
) -> None:
    fake_provider_server.script([Fail(status, message=f"the fake says no ({status})")])
    deltas = Deltas()
    provider = make(case)

    error = await _fails(provider.complete(REQUEST, model=MODEL, on_delta=deltas if stream else None))

    assert type(error) is kind
    assert (error.code, error.status_code) == (code, status)
    assert str(error).startswith(f"{case.id}: HTTP {status} ")
    assert f"the fake says no ({status})" in str(error)
    assert deltas.pieces == []
    # The SDK did not retry on its own.
    assert len(fake_provider_server.requests) == 1


async def test_rate_limit_message(case: Case, make: Factory, fake_provider_server: FakeProviderServer) -> None:
    fake_provider_server.script([Fail(429, message="Rate limit reached for requests")])

    error = await _fails(make(case).complete(REQUEST, model=MODEL))

    assert str(error) == f"{case.id}: HTTP 429 rate limited: Rate limit reached for requests"


async def test_error_inside_a_stream(case: Case, make: Factory, fake_provider_server: FakeProviderServer) -> None:
    fake_provider_server.script([Fail(500, message="the stream broke", after_chunks=1)])
    deltas = Deltas()

    error = await _fails(make(case).complete(REQUEST, model=MODEL, on_delta=deltas))

    assert isinstance(error, TransientModelError)
    assert error.code == "server_error"
    assert "the stream broke" in str(error)
    assert deltas.pieces == [Reply().pieces()[0]]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    "body",
    ['{"id": "broken", "choices": [{"message": ', '{"unexpected": true}', "<html>Bad gateway</html>"],
    ids=["truncated", "no-text", "not-json"],
)
async def test_malformed_answer(
    case: Case, make: Factory, fake_provider_server: FakeProviderServer, stream: bool, body: str
) -> None:
    fake_provider_server.script([Malformed(body)])

    error = await _fails(make(case).complete(REQUEST, model=MODEL, on_delta=Deltas() if stream else None))

    assert isinstance(error, PermanentModelError)
    assert error.code == "malformed_response"
    assert str(error).startswith(f"{case.id}: malformed response")


async def test_empty_answer_is_malformed(case: Case, make: Factory, fake_provider_server: FakeProviderServer) -> None:
    fake_provider_server.script([Reply("")])

    error = await _fails(make(case).complete(REQUEST, model=MODEL))

    assert isinstance(error, PermanentModelError)
    assert error.code == "malformed_response"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_timeout(case: Case, make: Factory, fake_provider_server: FakeProviderServer, stream: bool) -> None:
    fake_provider_server.script([Hang(10)])
    started = time.monotonic()

    error = await _fails(make(case, timeout=0.5).complete(REQUEST, model=MODEL, on_delta=Deltas() if stream else None))

    assert time.monotonic() - started < 3
    assert isinstance(error, TransientModelError)
    assert error.code == "timeout"
    assert len(fake_provider_server.requests) == 1


async def test_timeout_in_the_middle_of_a_stream(
    case: Case, make: Factory, fake_provider_server: FakeProviderServer
) -> None:
    fake_provider_server.script([Hang(10, after_chunks=1, then=Reply(ANSWER))])
    deltas = Deltas()
    started = time.monotonic()

    error = await _fails(make(case, timeout=0.5).complete(REQUEST, model=MODEL, on_delta=deltas))

    assert time.monotonic() - started < 3
    assert isinstance(error, TransientModelError)
    assert error.code == "timeout"
    assert deltas.pieces == [Reply(ANSWER).pieces()[0]]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_connection_refused(case: Case, make: Factory, stream: bool) -> None:
    provider = make(case, base_url=unused_base_url(), timeout=2.0)

    error = await _fails(provider.complete(REQUEST, model=MODEL, on_delta=Deltas() if stream else None))

    assert isinstance(error, TransientModelError)
    assert error.code == "connection_error"
    assert str(error).startswith(f"{case.id}: connection error")


@pytest.mark.parametrize("case", KEYED_CASES, ids=lambda case: case.id)
@pytest.mark.parametrize("key", [None, ""], ids=["none", "empty"])
async def test_missing_key(
    case: Case, make: Factory, fake_provider_server: FakeProviderServer, key: str | None
) -> None:
    error = await _fails(make(case, key=key).complete(REQUEST, model=MODEL))

    assert isinstance(error, PermanentModelError)
    assert error.code == "missing_api_key"
    assert case.env_var is not None
    assert case.env_var in str(error)
    assert fake_provider_server.requests == []


async def test_key_echoed_by_the_provider_is_redacted(
    case: Case, make: Factory, fake_provider_server: FakeProviderServer
) -> None:
    fake_provider_server.script([Fail(401, message=f"Incorrect API key provided: {KEY}.")])

    error = await _fails(make(case).complete(REQUEST, model=MODEL))

    assert error.code == "auth_failed"
    assert "Incorrect API key provided: [redacted]." in str(error)


async def test_gemini_invalid_key_is_an_auth_failure(make: Factory, fake_provider_server: FakeProviderServer) -> None:
    # The Gemini API answers a bad key with HTTP 400 INVALID_ARGUMENT, reason API_KEY_INVALID.
    fake_provider_server.script(
        [Fail(400, message="API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")]
    )

    error = await _fails(make(Case("gemini", "GEMINI_API_KEY")).complete(REQUEST, model=MODEL))

    assert isinstance(error, PermanentModelError)
    assert (error.code, error.status_code) == ("auth_failed", 400)


async def test_anthropic_overloaded_inside_a_stream(make: Factory, fake_provider_server: FakeProviderServer) -> None:
    fake_provider_server.script([Fail(529, message="Overloaded", after_chunks=1)])

    error = await _fails(make(Case("anthropic", "ANTHROPIC_API_KEY")).complete(REQUEST, model=MODEL, on_delta=Deltas()))

    assert isinstance(error, TransientModelError)
    assert (error.code, error.status_code) == ("server_error", 529)


async def test_script_then_default(make: Factory, fake_provider_server: FakeProviderServer) -> None:
    fake_provider_server.script([Fail(500), Reply(ANSWER)])
    provider = make(Case("openai", "OPENAI_API_KEY"))

    with pytest.raises(TransientModelError):
        await provider.complete(REQUEST, model=MODEL)
    assert (await provider.complete(REQUEST, model=MODEL)).text == ANSWER
    assert fake_provider_server.remaining == 0
    assert (await provider.complete(REQUEST, model=MODEL)).text == Reply().text
    assert len(fake_provider_server.requests) == 3


@pytest.mark.parametrize(
    "echo",
    [lambda key: key.lower(), lambda key: key.upper(), lambda key: f"{key[:8]}...{key[-4:]}", lambda key: key[3:12]],
    ids=["lower", "upper", "first-eight", "middle-nine"],
)
async def test_a_key_echoed_in_any_case_or_in_part_is_redacted(
    case: Case, make: Factory, fake_provider_server: FakeProviderServer, echo: Callable[[str], str]
) -> None:
    fake_provider_server.script([Fail(401, message=f"Incorrect API key provided: {echo(KEY)}.")])

    error = await _fails(make(case).complete(REQUEST, model=MODEL))

    assert "[redacted]" in str(error)
    text = str(error).lower()
    assert not any(KEY.lower()[start : start + 8] in text for start in range(len(KEY) - 7))


def test_logs_redact_keys_in_any_case_and_in_part() -> None:
    configure_logging(AppSettings(), [KEY])
    try:
        for echoed in (KEY.lower(), KEY.swapcase(), KEY[2:10]):
            assert "[redacted]" in redact(f"provider said {echoed}")
        assert redact("nothing secret here") == "nothing secret here"
    finally:
        configure_logging(AppSettings(), [])

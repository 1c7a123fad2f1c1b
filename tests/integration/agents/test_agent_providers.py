"""Agents through each real provider's wire protocol, served by a local HTTP server: retries with
backoff, usage capture and error reporting, from the API down to `llm_usage`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.agents.models import LlmUsage
from app.agents.personas import AGENT_ARTIFACTS, BUILT_IN
from app.agents.prompts import build_prompt
from app.config import Settings, load_settings
from app.db.engine import build_db_config
from app.llm.offline import OfflineProvider
from app.llm.pricing import cost_usd
from app.tasks.models import AgentType
from tests.conftest import FAST_ENV, free_port
from tests.fake_providers import Fail, FakeProviderServer, Hang, Malformed, Reply
from tests.fake_providers import fake_provider_server_fixture as fake_provider_server_fixture
from tests.helpers import app_client, start_server, wait_for_task

SECRET_KEY = f"sk-test-{uuid.uuid4().hex}"
PROVIDERS = {
    "openai": ("openai:gpt-4o-mini", "OPENAI_API_KEY", "OPENAI_BASE_URL", "openai_base_url"),
    "openai_compatible": (
        "openai_compatible:llama3.1",
        "BOTARMY_OPENAI_COMPATIBLE_API_KEY",
        "BOTARMY_OPENAI_COMPATIBLE_BASE_URL",
        "openai_base_url",
    ),
    "anthropic": ("anthropic:claude-sonnet-4-6", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "anthropic_base_url"),
    "gemini": ("gemini:gemini-2.5-flash", "GEMINI_API_KEY", "BOTARMY_GEMINI_BASE_URL", "gemini_base_url"),
}


async def valid_answer(agent: AgentType) -> str:
    """A schema-valid answer for `agent`, as a real model would send it."""
    built = build_prompt(BUILT_IN[agent], "A shop for handmade furniture", AGENT_ARTIFACTS[agent], [])
    return (await OfflineProvider().complete(built.request, model="x")).text


@pytest.fixture(params=sorted(PROVIDERS))
async def provider_client(
    request: pytest.FixtureRequest, fake_provider_server: FakeProviderServer, tmp_path: Path
) -> AsyncIterator[tuple[AsyncClient, Settings, str]]:
    provider = str(request.param)
    model_ref, key_var, url_var, url_attr = PROVIDERS[provider]
    env = {
        **FAST_ENV,
        "BOTARMY_DATA_DIR": str(tmp_path / "data"),
        "BOTARMY_MODEL_CODER": model_ref,
        key_var: SECRET_KEY,
        url_var: getattr(fake_provider_server, url_attr),
        "BOTARMY_MODEL_TIMEOUT_SECONDS": "1",
        "BOTARMY_LOG_LEVEL": "DEBUG",
    }
    settings = load_settings(env)
    async with app_client(settings, timeout=30) as client:
        yield client, settings, model_ref.split(":", 1)[1]


async def run_coder(client: AsyncClient) -> dict[str, object]:
    project = (await client.post("/api/v1/projects", json={"name": "through a provider"})).json()
    submitted = await client.post(
        f"/api/v1/projects/{project['id']}/tasks", json={"agent_type": "coder", "instructions": "Build the shop"}
    )
    assert submitted.status_code == 201, submitted.text
    task_id = submitted.json()["task_id"]
    for _ in range(200):
        task = (await client.get(f"/api/v1/tasks/{task_id}")).json()
        # A task whose every attempt failed waits for a human with the failure (`task_failure`).
        if task["status"] in ("completed", "failed", "waiting_for_hitl"):
            return dict(task)
        await asyncio.sleep(0.1)
    raise AssertionError(f"task did not finish: {task}")


async def usage_of(settings: Settings, task_id: str) -> list[LlmUsage]:
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            statement = select(LlmUsage).where(LlmUsage.task_id == uuid.UUID(task_id)).order_by(LlmUsage.created_at)
            return list(await session.scalars(statement))
    finally:
        await config.get_engine().dispose()


async def test_429_then_success(
    provider_client: tuple[AsyncClient, Settings, str], fake_provider_server: FakeProviderServer
) -> None:
    client, settings, model = provider_client
    fake_provider_server.script([Fail(429), Reply(await valid_answer(AgentType.CODER), tokens_in=1200, tokens_out=800)])
    task = await run_coder(client)
    assert task["status"] == "completed", task
    rows = await usage_of(settings, str(task["id"]))
    assert [row.outcome for row in rows] == ["rate_limited", "success"]
    assert (rows[1].tokens_in, rows[1].tokens_out, rows[1].model) == (1200, 800, model)
    assert rows[1].cost_usd == cost_usd(model, 1200, 800)
    assert rows[1].latency_ms > 0
    # The request carried our key, the model, the persona and the task.
    sent = fake_provider_server.last_request
    assert SECRET_KEY in " ".join(sent.headers.values())
    assert "Build the shop" in str(sent.json)
    assert "You are Cody, the coder" in str(sent.json)
    usage = (await client.get(f"/api/v1/projects/{task['project_id']}/usage")).json()
    assert usage["total"]["calls"] == 2
    assert usage["total"]["tokens_in"] == 1200


async def test_500_three_times_then_success(
    provider_client: tuple[AsyncClient, Settings, str], fake_provider_server: FakeProviderServer
) -> None:
    client, settings, _ = provider_client
    answer = await valid_answer(AgentType.CODER)
    fake_provider_server.script([Fail(500), Fail(500), Fail(500), Reply(answer)])
    task = await run_coder(client)
    assert task["status"] == "completed", task
    assert [row.outcome for row in await usage_of(settings, str(task["id"]))] == ["server_error"] * 3 + ["success"]


async def test_500_on_every_attempt_fails_with_the_providers_error(
    provider_client: tuple[AsyncClient, Settings, str], fake_provider_server: FakeProviderServer
) -> None:
    client, settings, _ = provider_client
    fake_provider_server.script([Fail(500, "upstream exploded")] * 4)
    task = await run_coder(client)
    assert (task["status"], task["output"]) == ("waiting_for_hitl", {"failed": task["error"], "code": "server_error"})
    assert "500" in str(task["error"])
    assert "upstream exploded" in str(task["error"])
    assert SECRET_KEY not in str(task["error"])
    provider = str(task["error"]).split(":")[0]
    assert str(task["error"]).count(f"{provider}:") == 1  # the provider named once, not "openai: openai: ..."
    assert len(await usage_of(settings, str(task["id"]))) == 4
    agents = (await client.get("/api/v1/agents/status", params={"project_id": str(task["project_id"])})).json()
    assert {row["agent_type"]: row["status"] for row in agents["items"]}["coder"] == "error"


async def test_a_malformed_body_fails_the_task_with_the_reason(
    provider_client: tuple[AsyncClient, Settings, str], fake_provider_server: FakeProviderServer
) -> None:
    """A body the SDK cannot read is not a hiccup of the network: it is reported, not retried."""
    client, settings, _ = provider_client
    fake_provider_server.script([Malformed(), Reply(await valid_answer(AgentType.CODER))])
    task = await run_coder(client)
    assert (task["status"], task["output"]) == (
        "waiting_for_hitl",
        {"failed": task["error"], "code": "malformed_response"},
    )
    assert "malformed" in str(task["error"]).lower()
    assert [row.outcome for row in await usage_of(settings, str(task["id"]))] == ["malformed_response"]
    assert fake_provider_server.remaining == 1


async def test_an_answer_that_breaks_the_schema_is_retried(
    provider_client: tuple[AsyncClient, Settings, str], fake_provider_server: FakeProviderServer
) -> None:
    client, settings, _ = provider_client
    fake_provider_server.script([Reply('{"summary": "no artifacts"}'), Reply(await valid_answer(AgentType.CODER))])
    task = await run_coder(client)
    assert task["status"] == "completed", task
    assert [row.outcome for row in await usage_of(settings, str(task["id"]))] == ["invalid_output", "success"]


async def test_a_timeout_is_retried(
    provider_client: tuple[AsyncClient, Settings, str], fake_provider_server: FakeProviderServer
) -> None:
    client, settings, _ = provider_client
    fake_provider_server.script([Hang(5), Reply(await valid_answer(AgentType.CODER))])
    task = await run_coder(client)
    assert task["status"] == "completed", task
    assert [row.outcome for row in await usage_of(settings, str(task["id"]))] == ["timeout", "success"]


def test_no_key_reaches_the_logs(fake_provider_server: FakeProviderServer, tmp_path: Path) -> None:
    """A served app at DEBUG, one agent on each provider, through retries and failures: no key in any log line."""
    keys = {provider: f"key-{provider}-{uuid.uuid4().hex}" for provider in PROVIDERS}
    env = {**FAST_ENV, "BOTARMY_DATA_DIR": str(tmp_path / "data"), "BOTARMY_LOG_LEVEL": "DEBUG"}
    agents = dict(zip(sorted(PROVIDERS), ["coder", "tester", "architect", "deployer"], strict=True))
    for provider, (model_ref, key_var, url_var, url_attr) in PROVIDERS.items():
        env |= {f"BOTARMY_MODEL_{agents[provider].upper()}": model_ref, key_var: keys[provider]}
        env[url_var] = getattr(fake_provider_server, url_attr)
    answers = {agent: asyncio.run(valid_answer(AgentType(agent))) for agent in agents.values()}
    server = start_server(env, free_port(), tmp_path / "api.log")
    try:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=20) as http:
            project = http.post("/api/v1/projects", json={"name": "keys"}).json()
            for provider, agent in agents.items():
                fake_provider_server.script([Fail(429), Fail(401)])
                task = http.post(
                    f"/api/v1/projects/{project['id']}/tasks", json={"agent_type": agent, "instructions": "x"}
                ).json()
                for _ in range(100):
                    if http.get(f"/api/v1/tasks/{task['task_id']}").json()["status"] == "waiting_for_hitl":
                        break
                    time.sleep(0.1)
                fake_provider_server.script([Reply(answers[agent])])
                done = http.post(
                    f"/api/v1/projects/{project['id']}/tasks", json={"agent_type": agent, "instructions": "y"}
                ).json()
                for _ in range(100):
                    if http.get(f"/api/v1/tasks/{done['task_id']}").json()["status"] == "completed":
                        break
                    time.sleep(0.1)
                assert http.get(f"/api/v1/tasks/{done['task_id']}").json()["status"] == "completed", provider
    finally:
        server.stop()
    log = server.log()
    assert "model_call_failed" in log  # the failures were logged, at DEBUG with every library's chatter
    for provider, key in keys.items():
        assert key not in log, provider


async def test_a_costly_call_waits_for_approval_under_high_oversight(
    fake_provider_server: FakeProviderServer, tmp_path: Path
) -> None:
    env = {
        **FAST_ENV,
        "BOTARMY_DATA_DIR": str(tmp_path / "data"),
        "BOTARMY_MODEL_CODER": "openai:gpt-4o",
        "OPENAI_API_KEY": SECRET_KEY,
        "OPENAI_BASE_URL": fake_provider_server.openai_base_url,
    }
    settings = load_settings(env)
    answer = await valid_answer(AgentType.CODER)
    async with app_client(settings, timeout=30) as client:
        for oversight, asks in (("medium", False), ("high", True)):
            project = (
                await client.post(
                    "/api/v1/projects",
                    json={"name": "costly", "oversight_level": oversight, "settings": {"call_cost_limit_usd": 0.0001}},
                )
            ).json()
            fake_provider_server.script([Reply(answer)])
            task_id = (
                await client.post(
                    f"/api/v1/projects/{project['id']}/tasks", json={"agent_type": "coder", "instructions": "Build"}
                )
            ).json()["task_id"]
            if asks:
                task = await wait_for_task(client, task_id, "waiting_for_hitl")
                assert task["output"]["blocked_by"] == "pre_call"
                assert fake_provider_server.remaining == 1  # the call was not made
                [request] = (await client.get(f"/api/v1/hitl/project/{project['id']}/requests")).json()["items"]
                assert request["kind"] == "pre_call"
                assert "gpt-4o" in request["question"]
                approved = await client.post(
                    f"/api/v1/hitl/{request['request_id']}/respond", json={"action": "approve"}
                )
                assert approved.status_code == 200, approved.text
            await wait_for_task(client, task_id, "completed")
            assert fake_provider_server.remaining == 0

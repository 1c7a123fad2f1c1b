"""Access control and hostile input: tokens, roles, scoping, limits, headers, no leaked secrets."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from httpx import AsyncClient
from litestar import Litestar
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler, WebsocketRouteHandler
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed

from app.config import Settings, load_settings
from app.core.security import PUBLIC_KEY, READ_ONLY_KEY, ROLE_KEY, hash_token
from app.db.engine import build_db_config
from app.events.models import Event
from app.main import create_app
from app.tokens.models import ApiToken
from tests.conftest import FAST_ENV, drop_redis_namespace, free_port
from tests.helpers import BOTARMY, REPO_ROOT, Server, app_client, cli_token, issue_token, start_server

OPEN_PATHS = {"/health", "/health/ready"}
# The web console's sign-in, sign-out and its scripts and styles (tests/integration/console/test_console.py).
CONSOLE_OPEN_PATHS = {"/login", "/logout", "/static/{file_path:path}"}
DOCS_PREFIX = "/schema"


def concrete(path: str) -> str:
    """A route path with every parameter filled in: a (random, so unknown) uuid, or a number."""
    path = re.sub(r"\{[^}]+:int\}", "1", path)
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


def handlers_of(route: Any) -> list[BaseRouteHandler]:
    handlers = getattr(route, "route_handlers", None) or [route.route_handler]
    return list(handlers)


def http_routes(app: Litestar) -> Iterator[tuple[str, str, HTTPRouteHandler]]:
    for route in app.routes:
        for handler in handlers_of(route):
            if isinstance(handler, HTTPRouteHandler):
                for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                    yield method, route.path, handler


def is_docs(path: str) -> bool:
    return path == DOCS_PREFIX or path.startswith(f"{DOCS_PREFIX}/")


@pytest.fixture
async def app_and_settings(settings: Settings) -> AsyncIterator[tuple[AsyncClient, Settings]]:
    """The app without any token on its client."""
    async with app_client(settings, role=None) as client:
        yield client, settings


async def token_client(client: AsyncClient, token: str) -> AsyncClient:
    client.headers["Authorization"] = f"Bearer {token}"
    return client


# -- the route table ------------------------------------------------------------------------


def test_every_route_declares_its_role(embedded_env: dict[str, str]) -> None:
    app = create_app(load_settings(embedded_env))
    undeclared = []
    kinds = set()
    for route in app.routes:
        for handler in handlers_of(route):
            kinds.add(type(handler))
            if is_docs(route.path):
                continue
            if ROLE_KEY not in handler.opt and not handler.opt.get(PUBLIC_KEY):
                undeclared.append(route.path)
            if handler.opt.get(PUBLIC_KEY):
                assert route.path in OPEN_PATHS | CONSOLE_OPEN_PATHS, f"{route.path} is public but may not be"
    assert undeclared == []
    assert WebsocketRouteHandler in kinds
    assert HTTPRouteHandler in kinds


async def test_no_route_is_reachable_without_a_token(app_and_settings: tuple[AsyncClient, Settings]) -> None:
    client, _ = app_and_settings
    app = create_app(load_settings({"BOTARMY_DATA_DIR": "unused"}))
    checked = 0
    for method, path, _handler in http_routes(app):
        response = await client.request(method, concrete(path), json={})
        if path in CONSOLE_OPEN_PATHS:
            # Open, answered as a browser expects: the sign-in form, a refused sign-in, a redirect, no such file.
            assert response.status_code in (200, 303, 401, 404), (method, path, response.status_code)
            continue
        if path in OPEN_PATHS or is_docs(path):
            # Open: answered, not refused ("/schema/{path}" with a made-up page is a plain 404).
            assert response.status_code in (200, 404), (method, path, response.status_code)
            continue
        assert response.status_code == 401, (method, path, response.status_code, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in response.json()["detail"]
        checked += 1
        wrong = await client.request(method, concrete(path), json={}, headers={"Authorization": "Bearer bat_nope"})
        assert wrong.status_code == 401, (method, path)
        assert wrong.json()["detail"] == "The token is unknown, revoked or expired."
    assert checked >= 10


async def test_a_viewer_token_can_change_nothing(app_and_settings: tuple[AsyncClient, Settings]) -> None:
    client, settings = app_and_settings
    admin = await issue_token(settings, "admin")
    project = (
        await client.post("/api/v1/projects", json={"name": "seen"}, headers={"Authorization": f"Bearer {admin}"})
    ).json()
    await token_client(client, await issue_token(settings, "viewer"))
    app = create_app(load_settings({"BOTARMY_DATA_DIR": "unused"}))
    changing = 0
    for method, path, handler in http_routes(app):
        if path in OPEN_PATHS | CONSOLE_OPEN_PATHS or is_docs(path) or handler.media_type == "text/event-stream":
            continue  # a stream the viewer may read never ends: tests/integration/events/test_stream_replay.py reads it
        # Use a real project where there is one, so that "not found" cannot hide a missing check.
        url = concrete(path.replace("{project_id:uuid}", project["id"]))
        response = await client.request(method, url, json={"name": "x", "agent_type": "coder", "instructions": "x"})
        if method == "GET" or handler.opt.get(READ_ONLY_KEY):
            assert method in ("GET", "POST")
            admin_only = handler.opt.get(ROLE_KEY) == "admin"
            assert (response.status_code == 403) == admin_only, (method, path, response.status_code)
            continue
        changing += 1
        assert response.status_code == 403, (method, path, response.status_code, response.text)
        assert "needs the" in response.json()["detail"]
    assert changing >= 4
    assert (await client.get(f"/api/v1/projects/{project['id']}")).json()["name"] == "seen"


async def test_roles_per_endpoint_group(app_and_settings: tuple[AsyncClient, Settings]) -> None:
    client, settings = app_and_settings
    owner = {"Authorization": f"Bearer {await issue_token(settings, 'product_owner')}"}
    viewer = {"Authorization": f"Bearer {await issue_token(settings, 'viewer')}"}
    created = await client.post("/api/v1/projects", json={"name": "owned"}, headers=owner)
    assert created.status_code == 201
    project_id = created.json()["id"]
    task = await client.post(
        f"/api/v1/projects/{project_id}/tasks", json={"agent_type": "coder", "instructions": "x"}, headers=owner
    )
    assert task.status_code == 201
    assert (await client.get(f"/api/v1/tasks/{task.json()['task_id']}", headers=viewer)).status_code == 200
    assert (await client.get(f"/api/v1/projects/{project_id}/status", headers=viewer)).status_code == 200
    assert (await client.get("/health/detailed", headers=viewer)).status_code == 200
    # Tokens are the admin's alone.
    for headers in (owner, viewer):
        assert (await client.get("/api/v1/tokens", headers=headers)).status_code == 403
        denied = await client.post("/api/v1/tokens", json={"name": "sneaky", "role": "admin"}, headers=headers)
        assert denied.status_code == 403


async def test_actions_record_the_tokens_name_as_actor(client: AsyncClient, settings: Settings) -> None:
    owner = await issue_token(settings, "product_owner")
    created = await client.post(
        "/api/v1/projects", json={"name": "audited"}, headers={"Authorization": f"Bearer {owner}"}
    )
    project_id = uuid.UUID(created.json()["id"])
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            name = await session.scalar(select(ApiToken.name).where(ApiToken.token_hash == hash_token(owner)))
            actors = list(await session.scalars(select(Event.actor).where(Event.project_id == project_id)))
    finally:
        await config.get_engine().dispose()
    assert name is not None
    assert name.startswith("test-product_owner-")
    assert actors == [name]


# -- tokens -----------------------------------------------------------------------------------


async def test_token_api_shows_the_secret_once_and_revocation_is_immediate(client: AsyncClient) -> None:
    name = f"ci-{uuid.uuid4().hex[:6]}"
    created = await client.post("/api/v1/tokens", json={"name": name, "role": "viewer"})
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["token"]
    assert secret.startswith("bat_")
    assert len(secret) > 40
    assert body["role"] == "viewer"
    assert body["revoked"] is False

    listing = await client.get("/api/v1/tokens")
    assert secret not in listing.text
    assert name in [row["name"] for row in listing.json()["items"]]
    duplicate = await client.post("/api/v1/tokens", json={"name": name, "role": "viewer"})
    assert duplicate.status_code == 409

    viewer = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/api/v1/projects", headers=viewer)).status_code == 200
    revoked = await client.delete(f"/api/v1/tokens/{body['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True
    assert (await client.get("/api/v1/projects", headers=viewer)).status_code == 401


async def test_token_input_is_validated(client: AsyncClient) -> None:
    for body, field in [
        ({"name": "x", "role": "overlord"}, "role"),
        ({"name": "", "role": "viewer"}, "name"),
        ({"name": "has space", "role": "viewer"}, "name"),
        ({"name": "x", "role": "viewer", "project_ids": []}, "project_ids"),
        ({"name": "x", "role": "viewer", "project_ids": [str(uuid.uuid4())]}, "project_ids"),
        ({"name": "x", "role": "viewer", "extra": 1}, "extra"),
    ]:
        response = await client.post("/api/v1/tokens", json=body)
        assert response.status_code in (400, 422), (body, response.text)
        assert field in response.text, (body, response.text)
    assert (await client.delete(f"/api/v1/tokens/{uuid.uuid4()}")).status_code == 404


def test_token_cli_create_list_revoke(embedded_env: dict[str, str]) -> None:
    secret = cli_token(embedded_env, role="product_owner", name="cli-owner")
    assert secret.startswith("bat_")

    def botarmy(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*BOTARMY, "token", *args],
            cwd=REPO_ROOT,
            env={"PATH": "/usr/bin:/bin", **embedded_env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = botarmy("list")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith("cli-owner"))
    assert "product_owner" in row
    assert "active" in row
    assert secret not in listed.stdout
    again = botarmy("create", "--name", "cli-owner", "--role", "viewer")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    bad_role = botarmy("create", "--name", "x", "--role", "god")
    assert bad_role.returncode == 2
    assert botarmy("revoke", "cli-owner").returncode == 0
    assert "revoked" in next(line for line in botarmy("list").stdout.splitlines() if line.startswith("cli-owner"))
    missing = botarmy("revoke", "nobody")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr


# -- project scoping ------------------------------------------------------------------------


async def test_a_scoped_token_sees_only_its_projects(client: AsyncClient, settings: Settings) -> None:
    mine = (await client.post("/api/v1/projects", json={"name": "mine"})).json()
    theirs = (await client.post("/api/v1/projects", json={"name": "theirs"})).json()
    other_task = (
        await client.post(f"/api/v1/projects/{theirs['id']}/tasks", json={"agent_type": "coder", "instructions": "x"})
    ).json()
    scoped = {"Authorization": f"Bearer {await issue_token(settings, 'product_owner', [uuid.UUID(mine['id'])])}"}

    listed = (await client.get("/api/v1/projects", params={"limit": 100}, headers=scoped)).json()
    assert [item["id"] for item in listed["items"]] == [mine["id"]]
    assert (await client.get(f"/api/v1/projects/{mine['id']}", headers=scoped)).status_code == 200
    for path in (f"/api/v1/projects/{theirs['id']}", f"/api/v1/projects/{theirs['id']}/status"):
        hidden = await client.get(path, headers=scoped)
        assert hidden.status_code == 404, path
        assert theirs["name"] not in hidden.text
    assert (await client.get(f"/api/v1/tasks/{other_task['task_id']}", headers=scoped)).status_code == 404
    blocked = await client.post(
        f"/api/v1/projects/{theirs['id']}/tasks", json={"agent_type": "coder", "instructions": "x"}, headers=scoped
    )
    assert blocked.status_code == 404
    new_project = await client.post("/api/v1/projects", json={"name": "escape"}, headers=scoped)
    assert new_project.status_code == 403
    assert "limited" in new_project.json()["detail"]
    allowed = await client.post(
        f"/api/v1/projects/{mine['id']}/tasks", json={"agent_type": "coder", "instructions": "x"}, headers=scoped
    )
    assert allowed.status_code == 201


# -- WebSockets on a served app ---------------------------------------------------------------


@pytest.fixture
def server(mode_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    served = start_server({**mode_env, "BOTARMY_WS_MAX_MESSAGE_BYTES": "4096"}, free_port(), tmp_path / "api.log")
    try:
        yield served
    finally:
        served.stop()


async def close_code(url: str, **kwargs: Any) -> tuple[int, str]:
    async with websockets.connect(url, **kwargs) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_websockets_need_a_token_and_respect_scope(server: Server) -> None:
    base = f"ws://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers) as http:
        mine = (await http.post("/api/v1/projects", json={"name": "ws mine"})).json()
        theirs = (await http.post("/api/v1/projects", json={"name": "ws theirs"})).json()
        assert await close_code(f"{base}/ws") == (4401, "A token is required: send 'Authorization: Bearer <token>'.")
        assert (await close_code(f"{base}/ws?token=bat_wrong"))[0] == 4401
        assert (await close_code(f"{base}/ws/projects/{mine['id']}"))[0] == 4401

        scoped = cli_token(server.env, role="viewer", projects=(mine["id"],))
        code, reason = await close_code(server.ws_url(f"/ws/projects/{theirs['id']}", scoped))
        assert code == 4404
        assert theirs["id"] in reason

        # The header works as well as the query parameter; a scoped /ws carries only its projects.
        async with websockets.connect(f"{base}/ws", additional_headers={"Authorization": f"Bearer {scoped}"}) as ws:
            await http.patch(f"/api/v1/projects/{theirs['id']}", json={"description": "elsewhere"})
            await http.patch(f"/api/v1/projects/{mine['id']}", json={"description": "here"})
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert event["project_id"] == mine["id"]
            assert event["event_type"] == "project_updated"


async def test_oversized_websocket_message_closes_the_connection(server: Server) -> None:
    async with websockets.connect(server.ws_url("/ws")) as ws:
        await ws.send("x" * 100)  # a small message that is not one gets an error answer
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["event_type"] == "error"
        await ws.send("x" * 10_000)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009  # message too big


async def test_no_secret_reaches_the_logs(own_services_env: dict[str, str], tmp_path: Path) -> None:
    """A password in DATABASE_URL and tokens in headers and query strings never appear in the log."""
    password = f"pw-{uuid.uuid4().hex}"
    env = {
        **own_services_env,
        "DATABASE_URL": own_services_env["DATABASE_URL"].replace("postgres@", f"postgres:{password}@"),
        "BOTARMY_LOG_LEVEL": "DEBUG",
    }
    server = start_server(env, free_port(), tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers) as http:
            project = (await http.post("/api/v1/projects", json={"name": "secrets"})).json()
            await http.get(f"/api/v1/projects/{uuid.uuid4()}")
            await http.get("/api/v1/projects", headers={"Authorization": "Bearer bat_guessed-secret-value"})
            async with websockets.connect(server.ws_url(f"/ws/projects/{project['id']}")):
                pass
            await close_code(f"ws://127.0.0.1:{server.port}/ws?token=bat_guessed-secret-value")
    finally:
        server.stop()
    log = server.log()
    assert "api_started" in log  # the log was captured at all
    for secret in (password, server.token, "bat_guessed-secret-value"):
        assert secret not in log


# -- limits and headers -----------------------------------------------------------------------


async def test_rate_limit_per_token(embedded_env: dict[str, str]) -> None:
    settings = load_settings({**embedded_env, "BOTARMY_RATE_LIMIT_PER_MINUTE": "5"})
    async with app_client(settings, role=None) as client:
        first = {"Authorization": f"Bearer {await issue_token(settings)}"}
        second = {"Authorization": f"Bearer {await issue_token(settings)}"}
        statuses = [(await client.get("/api/v1/projects", headers=first)).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        limited = await client.get("/api/v1/projects", headers=first)
        assert limited.status_code == 429
        assert "at most 5 requests a minute" in limited.json()["detail"]
        assert 0 < int(limited.headers["Retry-After"]) <= 60
        # Another token has its own budget; health checks are never limited.
        assert (await client.get("/api/v1/projects", headers=second)).status_code == 200
        health = [(await client.get("/health")).status_code for _ in range(8)]
        assert health == [200] * 8


async def test_rate_limit_headers_count_down_in_both_modes(mode_env: dict[str, str]) -> None:
    settings = load_settings({**mode_env, "BOTARMY_RATE_LIMIT_PER_MINUTE": "4"})
    async with app_client(settings) as client:
        responses = [await client.get("/api/v1/projects") for _ in range(5)]
    assert [r.status_code for r in responses] == [200] * 4 + [429]
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["3", "2", "1", "0", "0"]
    for response in responses:
        assert response.headers["RateLimit-Limit"] == "4"
        assert response.headers["RateLimit-Policy"] == "4; w=60"
        assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
    assert responses[-1].headers["Retry-After"] == responses[-1].headers["RateLimit-Reset"]
    assert "at most 4 requests a minute" in responses[-1].json()["detail"]


@pytest.mark.services
async def test_rate_limit_holds_across_api_instances_sharing_redis(services_env: dict[str, str]) -> None:
    """Two apps on one Redis namespace: one token's requests are counted together, none is lost
    when both count at once (Litestar's read-then-write counter lost some)."""
    namespace = f"rl-{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        {**services_env, "BOTARMY_REDIS_NAMESPACE": namespace, "BOTARMY_RATE_LIMIT_PER_MINUTE": "30"}
    )
    try:
        async with app_client(settings, role=None) as first, app_client(settings, role=None) as second:
            headers = {"Authorization": f"Bearer {await issue_token(settings)}"}
            sent = [client.get("/api/v1/projects", headers=headers) for client in (first, second) for _ in range(20)]
            statuses = Counter(response.status_code for response in await asyncio.gather(*sent))
            assert statuses == {200: 30, 429: 10}
    finally:
        drop_redis_namespace(namespace)


async def test_json_nesting_is_bounded(client: AsyncClient) -> None:
    nested: Any = "leaf"
    for _ in range(12):
        nested = {"next": nested}
    too_deep = await client.post("/api/v1/projects", json={"name": "deep", "settings": nested})
    assert too_deep.status_code == 400
    assert "settings: nested deeper than 10 levels" in too_deep.text
    bomb = b'{"name": "bomb", "settings": {"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}"
    exploded = await client.post("/api/v1/projects", content=bomb, headers={"content-type": "application/json"})
    assert exploded.status_code == 400
    assert "nested too deeply" in exploded.json()["detail"]
    fine = await client.post("/api/v1/projects", json={"name": "shallow", "settings": {"a": {"b": [1, 2]}}})
    assert fine.status_code == 201


async def test_security_headers_on_every_response(client: AsyncClient) -> None:
    for response in (
        await client.get("/health"),
        await client.get(f"/api/v1/projects/{uuid.uuid4()}"),
        await client.get("/api/v1/projects", headers={"Authorization": ""}),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_cors_for_a_browser_client_on_another_origin(embedded_env: dict[str, str]) -> None:
    settings = load_settings({**embedded_env, "BOTARMY_CORS_ORIGINS": "https://app.example.com"})
    async with app_client(settings, role=None) as client:
        preflight = await client.options(
            "/api/v1/projects",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        token = {"Authorization": f"Bearer {await issue_token(settings)}"}
        actual = await client.get("/api/v1/projects", headers={"Origin": "https://app.example.com", **token})
        assert actual.headers["access-control-allow-origin"] == "https://app.example.com"
        stranger = await client.get("/api/v1/projects", headers={"Origin": "https://evil.example", **token})
        assert "access-control-allow-origin" not in stranger.headers


def test_first_embedded_start_makes_an_admin_token_once(tmp_path: Path) -> None:
    """Its output is not a terminal (a log file): the token goes to an owner-only file, never the log."""
    env = {**FAST_ENV, "BOTARMY_DATA_DIR": str(tmp_path / "data")}
    token_file = tmp_path / "data" / "admin-token"
    outputs: list[str] = []
    for _ in range(2):
        server = start_server(env, free_port(), tmp_path / f"api-{len(outputs)}.log")
        server.stop()
        outputs.append(server.log())
        if len(outputs) == 1:
            printed = re.findall(r"^(bat_\S+)$", token_file.read_text(), flags=re.MULTILINE)
            assert oct(token_file.stat().st_mode & 0o777) == "0o600"
            token_file.unlink()
    assert len(printed) == 1
    assert str(token_file) in outputs[0] or "admin-token" in outputs[0]  # where it is, in the log
    assert "bat_" not in outputs[0] + outputs[1]
    assert not token_file.exists()  # the second start made none
    response = httpx.Client()
    try:
        server = start_server(env, free_port(), tmp_path / "api-check.log")
        try:
            listed = response.get(f"{server.url}/api/v1/tokens", headers={"Authorization": f"Bearer {printed[0]}"})
            assert listed.status_code == 200
            assert "admin" in [row["name"] for row in listed.json()["items"]]
        finally:
            server.stop()
    finally:
        response.close()

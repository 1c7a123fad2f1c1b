"""Hostile use of the doors: bogus tokens, forged forwarded headers, idle and slow connections, a
connection flood, heavy exports, and where the first admin token goes. Real sockets against a real
`botarmy serve` where the behaviour lives in the server (uvicorn's protocol, its proxy handling)."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import socket
import stat
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.config import load_settings
from app.core.serving import serving_options
from app.tokens.bootstrap import TOKEN_FILE, show_admin_token
from tests.conftest import REDIS_TEST_URL, free_port
from tests.helpers import Server, app_client, cli_token, start_server


def bogus() -> dict[str, str]:
    return {"Authorization": f"Bearer bat_{secrets.token_urlsafe(32)}"}


# -- failed authentications -------------------------------------------------------------------


@pytest.fixture
def own_env(mode: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings of the mode under test, with a Redis namespace of this test's own."""
    env: dict[str, str] = request.getfixturevalue("embedded_env" if mode == "embedded" else "own_services_env")
    return env


async def test_bogus_tokens_get_429_and_open_no_counter_each(own_env: dict[str, str]) -> None:
    settings = load_settings({**own_env, "BOTARMY_AUTH_FAILURES_PER_MINUTE": "10"})
    async with app_client(settings, role=None) as client:
        statuses = [(await client.get("/api/v1/projects", headers=bogus())).status_code for _ in range(300)]
        assert statuses[:10] == [401] * 10
        assert set(statuses[10:]) == {429}
        limited = await client.get("/api/v1/projects", headers=bogus())
        assert "failed authentications" in limited.json()["detail"]
        assert 0 < int(limited.headers["Retry-After"]) <= 60
        assert (await client.get("/health")).status_code == 200
    if settings.redis.url:
        keys = list(redis.Redis.from_url(REDIS_TEST_URL).scan_iter(match=f"{settings.redis.namespace}:ratelimit:*"))
        assert 1 <= len(keys) <= 2  # one hash per window, whatever the number of tokens tried


async def test_a_valid_token_is_counted_a_bogus_one_is_not(embedded_env: dict[str, str]) -> None:
    settings = load_settings(
        {**embedded_env, "BOTARMY_RATE_LIMIT_PER_MINUTE": "3", "BOTARMY_AUTH_FAILURES_PER_MINUTE": "100"}
    )
    async with app_client(settings) as client:
        for _ in range(20):
            assert (await client.get("/api/v1/projects", headers=bogus())).status_code == 401
        statuses = [(await client.get("/api/v1/projects")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]


# -- the served doors -------------------------------------------------------------------------


def served(tmp_path: Path, **settings: str) -> Server:
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {
        "BOTARMY_DATA_DIR": str(tmp_path / "data"),
        "BOTARMY_LOG_LEVEL": "WARNING",
        **{f"BOTARMY_{name.upper()}": value for name, value in settings.items()},
    }
    return start_server(env, free_port(), tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log")


def raw(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def dribble(server: Server, opening: bytes, drip: bytes) -> tuple[bytes, float]:
    """Send `opening`, then `drip` every 0.3 s until the server answers (or 15 s pass): the answer
    and the seconds it took."""
    sock = raw(server)
    sock.settimeout(0.3)
    sock.sendall(opening)
    started, answer = time.monotonic(), b""
    while time.monotonic() - started < 15:
        try:
            sock.sendall(drip)
            answer += sock.recv(65536)
            if answer:
                break
        except TimeoutError:
            continue
        except OSError:
            break
    sock.close()
    return answer, time.monotonic() - started


def test_forwarded_headers_are_believed_only_from_trusted_proxies() -> None:
    """None by default (uvicorn's own default trusts 127.0.0.1); the served check is below."""
    assert serving_options(load_settings({}).server)["proxy_headers"] is False
    options = serving_options(load_settings({"BOTARMY_TRUSTED_PROXIES": "10.0.0.1, 10.1.0.0/16"}).server)
    assert (options["proxy_headers"], options["forwarded_allow_ips"]) == (True, ["10.0.0.1", "10.1.0.0/16"])


def test_connections_are_capped_and_idle_or_slow_ones_shed(tmp_path: Path) -> None:
    server = served(
        tmp_path,
        max_connections="8",
        keep_alive_seconds="1",
        header_timeout_seconds="2",
        body_timeout_seconds="2",
        auth_failures_per_minute="5",
    )
    try:
        # Idle connections up to the cap; the one past it is answered 503 and closed.
        idle = [raw(server) for _ in range(8)]
        time.sleep(0.2)
        extra = raw(server)
        assert read_all(extra).startswith(b"HTTP/1.1 503")
        # Nothing sent: closed after the idle timeout (uvicorn kept them forever).
        started = time.monotonic()
        assert all(read_all(sock) == b"" for sock in idle)
        assert time.monotonic() - started < 5
        for sock in [*idle, extra]:
            sock.close()

        # Slowloris, three ways, each kept up for up to 15 s: a header line now and then, blank
        # lines before any request (the parser skips them without starting one), and a body
        # dribbled a byte at a time. Each is answered 408 and closed within the timeouts.
        token = server.headers["Authorization"]
        slow_body = f"POST /api/v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        cases = [
            (b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n"),
            (b"", b"\r\n"),
            (f"{slow_body}Content-Type: application/json\r\nContent-Length: 200\r\n\r\n".encode(), b" "),
        ]
        with ThreadPoolExecutor(len(cases)) as pool:
            outcomes = list(pool.map(lambda case: dribble(server, *case), cases))
        for (answer, seconds), reason in zip(outcomes, [b"headers", b"headers", b"body"], strict=True):
            assert answer.startswith(b"HTTP/1.1 408"), (outcomes, reason)
            assert reason in answer
            assert seconds < 4.5, seconds

        # Whole requests are served as before, keep-alive included.
        with httpx.Client(base_url=server.url) as client:
            assert [client.get("/health").status_code for _ in range(3)] == [200] * 3

            # From an untrusted peer (no BOTARMY_TRUSTED_PROXIES), a forged X-Forwarded-For changes
            # nothing: bogus tokens from one address are limited however it names itself.
            forged = [
                client.get("/api/v1/projects", headers={**bogus(), "X-Forwarded-For": f"10.0.0.{n}"}).status_code
                for n in range(10)
            ]
            assert forged == [401] * 5 + [429] * 5
    finally:
        server.kill()


# -- exports ----------------------------------------------------------------------------------


def big_code(index: int, files: int = 3, size: int = 160_000) -> dict[str, Any]:
    line = f"def handler_{index}(request):  # a generated line of code, of a file of a project\n"
    body = (line * (size // len(line) + 1))[:size]
    return {
        "artifact_type": "source_code",
        "title": f"code {index}",
        "content": {
            "files": [{"path": f"pkg{index}/m{n}.py", "language": "python", "content": body} for n in range(files)]
        },
    }


async def test_concurrent_exports_do_not_stall_other_requests(tmp_path: Path) -> None:
    """Eight concurrent zip exports of a ~28 MB project by a viewer: /health stays fast."""
    server = served(tmp_path, max_body_bytes=str(8 * 1024 * 1024))
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=120) as admin:
            project_id = (await admin.post("/api/v1/projects", json={"name": "Big"})).json()["id"]
            for index in range(58):  # 58 x 480 kB: ~28 MB
                created = await admin.post(f"/api/v1/projects/{project_id}/artifacts", json=big_code(index))
                assert created.status_code == 201, created.text
        viewer = {"Authorization": f"Bearer {cli_token(server.env, 'viewer')}"}
        export = f"/api/v1/projects/{project_id}/documents/export?format=zip"
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            exporting = [asyncio.create_task(client.get(export, headers=viewer)) for _ in range(8)]
            latencies: list[float] = []
            while not all(task.done() for task in exporting) or len(latencies) < 20:
                started = time.perf_counter()
                assert (await client.get("/health")).status_code == 200
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)
            answers = [task.result() for task in exporting]
        assert [answer.status_code for answer in answers] == [200] * 8
        assert len(answers[0].content) > 100_000
        p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 100 else max(latencies)
        # p99 100-130 ms measured here on 2 shared cores (68 ms from a client of its own process): the
        # export threads and the loop share the GIL. A margin for CI.
        assert p99 < 0.3, (p99, len(latencies))
    finally:
        server.kill()


# -- the first admin token --------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_first_admin_token_is_shown_only_on_a_terminal(tmp_path: Path) -> None:
    terminal = Terminal()
    assert show_admin_token("bat_secret-one", tmp_path, terminal) is None
    assert "bat_secret-one" in terminal.getvalue()
    assert not (tmp_path / TOKEN_FILE).exists()

    captured = io.StringIO()  # a pipe, a container's log
    path = show_admin_token("bat_secret-two", tmp_path, captured)
    assert captured.getvalue() == ""
    assert path == tmp_path / TOKEN_FILE
    assert path.read_text().strip() == "bat_secret-two"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

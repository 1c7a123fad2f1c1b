"""The web console in a real browser: headless Chromium (the system's) driven by Playwright, against a
real `botarmy serve` on the embedded default. A high-oversight project on the default workflow stops
at every phase: the test signs in, creates the project, watches its events arrive live, approves one
gate, amends the next, and downloads the export. Where Chromium is missing the test is skipped,
except under CI=true (a failure). `BOTARMY_CONSOLE_SCREENSHOTS=docs` also writes the README's
screenshots there."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from playwright.sync_api import Browser, Page, expect, sync_playwright
from websockets.exceptions import ConnectionClosed

from tests.conftest import FAST_ENV, IN_CI, free_port
from tests.helpers import Server, start_server

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 20_000


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"CI=true but {CHROMIUM} is missing (Debian packages chromium, chromium-driver)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module's tests (each makes its own projects): starting one takes a while."""
    folder = tmp_path_factory.mktemp("console")
    served = start_server({**FAST_ENV, "BOTARMY_DATA_DIR": str(folder / "data")}, free_port(), folder / "api.log")
    try:
        yield served
    finally:
        served.stop()


def shoot(page: Page, name: str, tmp_path: Path) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=False)
    if folder := os.environ.get("BOTARMY_CONSOLE_SCREENSHOTS"):
        page.screenshot(path=str(Path(folder) / name), full_page=False)


def open_pending_request(page: Page) -> str:
    """Wait on the project page until a review is pending (the panels follow the live events), open it."""
    link = page.locator("#panel-hitl a.request").first
    expect(link).to_be_visible(timeout=WAIT_MS)
    href = link.get_attribute("href") or ""
    link.click()
    page.wait_for_url(f"**{href}")
    return href.rsplit("/", 1)[-1]


def test_a_product_owner_runs_a_project_from_the_browser(browser: Browser, server: Server, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []  # a script or style refused by the CSP, or a script failing, shows here
    # (not the refused sign-in below: a 401 answer is logged as "Failed to load resource")
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda error: errors.append(str(error)))

    # Without the cookie every page leads to the login form; a wrong token is refused there.
    page.goto(f"{server.url}/")
    page.wait_for_url("**/login")
    page.fill("input[name=token]", "bat_wrong")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("unknown, revoked or expired")
    page.fill("input[name=token]", server.token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    cookie = next(c for c in context.cookies() if c["name"] == "botarmy_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # out of reach of scripts

    # Create a project that stops at every phase, on the default workflow.
    form = page.locator("#create-project")
    form.locator("input[name=name]").fill("Team todo")
    form.locator("textarea[name=idea]").fill("A todo list for small teams, with due dates and reminders")
    form.locator("select[name=oversight_level]").select_option("high")
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/projects/[0-9a-f-]{36}$"))
    project_id = page.url.rsplit("/", 1)[-1]

    # Events arrive live over the WebSocket, and the panels follow them.
    expect(page.locator("#live-state")).to_have_text("live", timeout=WAIT_MS)
    expect(page.locator("#events li").first).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#events")).to_contain_text("workflow", timeout=WAIT_MS)
    expect(page.locator("#panel-status .timeline .phase").first).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#panel-artifacts .tree a").first).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#panel-hitl a.request")).to_have_count(1, timeout=WAIT_MS)

    # The chat: the message and the orchestrator's answer arrive over the stream.
    page.fill("#chat-form input[name=message]", "Which phase comes next?")
    page.click("#chat-form button")
    expect(page.locator("#chat li.mine")).to_contain_text("Which phase comes next?", timeout=WAIT_MS)
    expect(page.locator("#chat li.theirs").first).to_be_visible(timeout=WAIT_MS)

    # Approve the first gate.
    first = open_pending_request(page)
    expect(page.locator("h1")).to_contain_text("phase")
    expect(page.locator(".document h3").first).to_be_visible()  # what the gate is about, as a document
    page.click("#hitl-form button[value=approve]")
    page.wait_for_url(f"**/projects/{project_id}")

    # Amend one document of the next gate: its JSON, with one value changed.
    second = open_pending_request(page)
    assert second != first
    shoot(page, "console-review.png", tmp_path)
    page.click("#amend-box summary")
    editor = page.locator("textarea.amend-content:not([hidden])")
    artifact_id = editor.get_attribute("data-artifact-id")
    content = json.loads(editor.input_value())
    key = next(k for k, v in content.items() if isinstance(v, str))
    content[key] = f"{content[key]} (amended in the console)"
    editor.fill(json.dumps(content, indent=2))
    page.fill("#hitl-form textarea[name=comment]", "Sharper wording")
    page.click("#hitl-form button[value=amend]")
    page.wait_for_url(f"**/projects/{project_id}")
    expect(page.locator("#panel-hitl a.request")).to_have_count(1, timeout=WAIT_MS)  # the next gate
    shoot(page, "console-project.png", tmp_path)

    headers = server.headers
    with httpx.Client(base_url=server.url, headers=headers, timeout=20) as http:
        assert http.get(f"/api/v1/hitl/{first}").json()["status"] == "approved"
        answered = http.get(f"/api/v1/hitl/{second}").json()
        assert answered["status"] == "amended"
        assert answered["response_comment"] == "Sharper wording"
        artifact = http.get(f"/api/v1/artifacts/{artifact_id}").json()
        assert artifact["content"][key].endswith("(amended in the console)")

    # The artifact is readable and downloadable.
    page.goto(f"{server.url}/artifacts/{artifact_id}")
    expect(page.locator(".document")).to_contain_text("(amended in the console)")
    with page.expect_download() as artifact_download:
        page.click("text=Download")
    assert "(amended in the console)" in Path(artifact_download.value.path()).read_text()

    # The export of the documents, as a zip.
    page.goto(f"{server.url}/projects/{project_id}")
    with page.expect_download() as export:
        page.click("#export-zip")
    archive = zipfile.ZipFile(io.BytesIO(Path(export.value.path()).read_bytes()))
    assert archive.namelist()

    page.goto(f"{server.url}/")
    expect(page.locator("#projects")).to_contain_text("Team todo")
    shoot(page, "console-projects.png", tmp_path)

    # Logging out clears the cookie: the pages lead to the login form again.
    page.click("text=Log out")
    page.wait_for_url("**/login")
    page.goto(f"{server.url}/projects/{project_id}")
    page.wait_for_url("**/login")
    assert errors == []
    context.close()


def test_the_console_cookie_cannot_be_used_across_sites(server: Server) -> None:
    """A cross-site page can make a browser send the cookie with a form or a link, never with a custom
    header: unsafe API requests need the header, and WebSockets must come from the server's origin."""
    with httpx.Client(base_url=server.url, timeout=20) as http:
        login = http.post("/login", data={"token": server.token})
        assert login.status_code == 303
        assert http.get("/api/v1/projects").status_code == 200
        forged = http.post("/api/v1/projects", json={"name": "forged"})
        assert forged.status_code == 401
        made = http.post("/api/v1/projects", json={"name": "mine"}, headers={"x-botarmy-console": "1"})
        assert made.status_code == 201
        elsewhere = http.post("/login", data={"token": server.token}, headers={"origin": "https://evil.example"})
        assert elsewhere.status_code == 403
        page = http.get("/")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "'unsafe-inline'" not in page.headers["content-security-policy"]


async def test_the_console_cookie_opens_a_websocket_only_from_the_servers_origin(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=20) as http:
        project = (await http.post("/api/v1/projects", json={"name": "sockets"})).json()
    url = f"ws://127.0.0.1:{server.port}/ws/projects/{project['id']}?last=5"
    cookie = {"Cookie": f"botarmy_token={server.token}"}

    async def first_message(origin: str) -> tuple[int | None, str]:
        async with websockets.connect(url, origin=origin, additional_headers=cookie) as socket:  # type: ignore[arg-type]
            try:
                return None, str(await asyncio.wait_for(socket.recv(), 5))
            except ConnectionClosed as closed:
                return (closed.rcvd.code if closed.rcvd else None), (closed.rcvd.reason if closed.rcvd else "")

    code, first = await first_message(server.url)
    assert code is None and "project_created" in first  # the stream's replay
    code, _ = await first_message("https://evil.example")
    assert code == 4401


def test_an_artifact_page_shows_its_document_with_nothing_active(server: Server) -> None:
    """The page renders the content as a document (not JSON), and what it holds stays text: no
    script, no link to a script, no image fetched from elsewhere."""
    hostile = "<script>alert(1)</script> [click](javascript:alert(1)) ![t](https://evil.example/t.png)"
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=20) as http:
        project = http.post("/api/v1/projects", json={"name": "readable"}).json()
        body = {
            "artifact_type": "user_input",
            "title": "Checklist",
            "content": {"verdict": "passes", "notes": [hostile]},
        }
        artifact = http.post(f"/api/v1/projects/{project['id']}/artifacts", json=body).json()
        page = http.get(f"/artifacts/{artifact['id']}")
    assert page.status_code == 200
    document = page.text.split('<div class="document">', 1)[1].split("</div>", 1)[0]
    assert "<h2>Checklist</h2>" in document  # under the page's own h1
    assert "<h3>Verdict</h3>" in document and "<p>passes</p>" in document
    assert "&lt;script&gt;" in document and "<script" not in document
    assert "<a " not in document and "<img" not in document and "evil.example" not in document

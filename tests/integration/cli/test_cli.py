"""The product owner's command line, run for real in subprocesses: `botarmy run` driven through a
pseudo terminal (approve, reject with a comment, amend in $EDITOR), Ctrl-C and --resume, and the
client commands against a served BotArmy (projects, approve/reject, watch across a restart)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import IO

import httpx
import pexpect
import pytest

from tests.conftest import FAST_ENV, free_port
from tests.helpers import BOTARMY, REPO_ROOT, start_server

IDEA = "A todo list for teams: tasks with due dates, assignees and reminders"
AMEND_MARK = "AMENDED-AT-THE-TERMINAL"


def run_env(tmp_path: Path) -> dict[str, str]:
    editor = tmp_path / "editor.py"
    editor.write_text(
        textwrap.dedent(
            f"""
            import json, sys
            path = sys.argv[1]
            content = json.load(open(path))
            key = next(key for key, value in content.items() if isinstance(value, str))
            content[key] = content[key] + " {AMEND_MARK}"
            json.dump(content, open(path, "w"))
            """
        )
    )
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    return {**env, **FAST_ENV, "EDITOR": f"{sys.executable} {editor}", "TERM": "dumb", "NO_COLOR": "1"}


def spawn_run(tmp_path: Path, *args: str) -> pexpect.spawn[str]:
    return pexpect.spawn(
        sys.executable,
        ["-m", "app", "run", *args],
        cwd=str(REPO_ROOT),
        env=run_env(tmp_path),
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )


def test_run_asks_at_the_terminal_and_writes_the_project(tmp_path: Path) -> None:
    out = tmp_path / "out"
    child = spawn_run(tmp_path, IDEA, "--oversight", "high", "--out", str(out))
    answers = {"discovery": 0}
    rejected = amended = False
    while True:
        index = child.expect([r"The (\w+) phase is done", r"done in", pexpect.EOF])
        if index != 0:
            break
        assert isinstance(child.match, re.Match)
        phase = child.match.group(1)
        child.expect(r"a\[m\]end a document\? ")
        if phase == "discovery" and not rejected:
            child.sendline("r")
            child.expect(r"comment \(what to change\): ")
            child.sendline("Add offline sync")
            rejected = True
        elif phase == "design" and not amended:
            child.sendline("m")
            if child.expect([r"which one \[1-2\]\? ", r"comment \(why\): "]) == 0:
                child.sendline("1")
                child.expect(r"comment \(why\): ")
            child.sendline("the overview said too little")
            amended = True
        else:
            child.sendline("a")
        answers[phase] = answers.get(phase, 0) + 1
    output = child.before or ""
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, output
    assert rejected and amended
    assert answers["discovery"] == 2  # asked again after the redo
    prd = (out / "docs" / "prd.md").read_text()
    assert "due date" in prd.lower()
    assert "revised: Add offline sync" in prd
    design = (out / "docs" / "architecture.md").read_text() + (out / "docs" / "implementation-plan.md").read_text()
    assert AMEND_MARK in design
    sources = list((out / "src").rglob("*.py"))
    assert any("task" in path.read_text().lower() for path in sources)
    assert (out / "src" / "Containerfile").is_file()


def test_ctrl_c_halts_a_running_step_at_once(tmp_path: Path) -> None:
    """A step in a long model call is halted, not waited for: the stop takes a moment, says nothing
    alarming, and leaves the step pending for --resume (not `working`, to be found by a sweep)."""
    out = tmp_path / "out"
    child = spawn_run(tmp_path, f"{IDEA} [[offline:delay=30]]", "--oversight", "low", "--out", str(out), "--yes")
    child.expect(r"step 1/6")
    signalled = time.monotonic()
    child.kill(signal.SIGINT)
    child.expect(f"Stopped. Continue with: botarmy run --out {out} --resume --yes", timeout=20)
    child.expect(pexpect.EOF)
    stopped_in = time.monotonic() - signalled
    output = child.before or ""
    child.close()
    assert child.exitstatus == 130
    assert stopped_in < 8, stopped_in  # it took 15 s, the running step's wait and a shutdown that cut it
    assert "Traceback" not in output and "CancelledError" not in output, output
    with sqlite3.connect(out / ".botarmy" / "botarmy.db") as db:
        assert db.execute("select status from agent_task").fetchall() == [("pending",)]


def test_ctrl_c_pauses_and_resume_finishes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    child = spawn_run(tmp_path, f"{IDEA} [[offline:delay=0.5]]", "--oversight", "low", "--out", str(out), "--yes")
    child.expect(r"step 2/6")
    # Twice: the second Ctrl-C does not wait for the stop. What was running, --resume runs again.
    child.kill(signal.SIGINT)
    time.sleep(0.02)
    child.kill(signal.SIGINT)
    child.expect(f"Stopped at once. Continue with: botarmy run --out {out} --resume --yes")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert not (out / "docs").exists()
    resumed = spawn_run(tmp_path, "--out", str(out), "--resume", "--yes")
    resumed.expect("Resuming botarmy-sdlc")
    resumed.expect("done in", timeout=90)
    resumed.expect(pexpect.EOF)
    resumed.close()
    assert resumed.exitstatus == 0
    assert (out / "docs" / "prd.md").is_file()
    # The same folder refuses a second unfinished run only; a finished one may be followed by a new one.
    again = subprocess.run(
        [*BOTARMY, "run", "--out", str(out), "--resume", "--yes"],
        cwd=REPO_ROOT,
        env=run_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr


def test_bad_run_input_is_one_line(tmp_path: Path) -> None:
    env = run_env(tmp_path)
    for args, message in [
        (["run", "--out", str(tmp_path / "none"), "--resume"], "nothing to resume"),
        (["run", "--out", str(tmp_path / "x")], "give the product idea"),
        (["run", "an idea", "--workflow", "nope", "--out", str(tmp_path / "y")], "Workflow 'nope' does not exist"),
    ]:
        result = subprocess.run(
            [*BOTARMY, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode != 0
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {**FAST_ENV, "BOTARMY_DATA_DIR": str(tmp_path / "data")}
    port = free_port()
    server = start_server(env, port, tmp_path / "server.log")
    try:
        yield server
    finally:
        server.stop()


def botarmy(server_url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BOTARMY_URL": server_url, "BOTARMY_TOKEN": token}
    return subprocess.run(
        [*BOTARMY, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_client_commands_steer_a_served_project(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    http = httpx.Client(base_url=served.url, headers=served.headers, timeout=10)
    project = http.post("/api/v1/projects", json={"name": "Team todo", "oversight_level": "high"}).json()
    http.post(
        "/api/v1/executions",
        json={"project_id": project["id"], "workflow_id": "botarmy-sdlc", "inputs": {"idea": IDEA}},
    )
    listed = botarmy(served.url, served.token, "projects")
    assert listed.returncode == 0 and project["id"] in listed.stdout and "Team todo" in listed.stdout

    def pending() -> list[dict[str, object]]:
        for _ in range(100):
            items = http.get(f"/api/v1/hitl/project/{project['id']}/requests", params={"status": "pending"}).json()
            if items["items"]:
                return list(items["items"])
            time.sleep(0.1)
        raise AssertionError("no request")

    first = str(pending()[0]["request_id"])
    refused = botarmy(served.url, served.token, "reject", first)
    assert refused.returncode == 2 and "--comment" in refused.stderr
    assert botarmy(served.url, served.token, "reject", first, "--comment", "More about teams").stdout.split()[-1] == (
        "rejected"
    )
    second = str(next(r for r in pending() if r["request_id"] != first)["request_id"])
    approved = botarmy(served.url, served.token, "approve", second)
    assert approved.returncode == 0 and approved.stdout.split()[-1] == "approved"
    again = botarmy(served.url, served.token, "approve", second)
    assert again.returncode == 1 and "Traceback" not in again.stderr and "HTTP 409" in again.stderr
    bad_token = botarmy(served.url, "bat_nope", "projects")
    assert bad_token.returncode == 1 and "HTTP 401" in bad_token.stderr
    nothing = botarmy("http://127.0.0.1:9", served.token, "projects")
    assert nothing.returncode == 1 and "cannot reach" in nothing.stderr


class Lines:
    """A child's output lines, read by a thread: the test waits on what they say, never on a blocked read."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str] | None) -> None:
        for line in stream or ():
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"no {text!r} in {self.lines}"
            time.sleep(0.02)


def start_watch(server_url: str, token: str, *args: str) -> tuple[subprocess.Popen[str], Lines, Lines]:
    env = {**os.environ, "BOTARMY_URL": server_url, "BOTARMY_TOKEN": token}
    watcher = subprocess.Popen(
        [*BOTARMY, "watch", *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return watcher, Lines(watcher.stdout), Lines(watcher.stderr)


def stop_watch(watcher: subprocess.Popen[str]) -> None:
    watcher.send_signal(signal.SIGINT)
    try:
        watcher.wait(30)
    except subprocess.TimeoutExpired:
        watcher.kill()
        watcher.wait(10)
        raise


def artifact_titles(lines: list[str]) -> list[str]:
    ids = [int(line.split()[0]) for line in lines if line.strip()]
    assert ids == sorted(set(ids))  # in order, none twice
    return [json.loads(line.split("  ", 2)[2]).get("title") for line in lines if "artifact_created" in line]


def test_watch_resumes_across_a_server_restart(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    http = httpx.Client(base_url=served.url, headers=served.headers, timeout=30)
    project = http.post("/api/v1/projects", json={"name": "Watched"}).json()
    watcher, out, _ = start_watch(served.url, served.token, project["id"], "--after", "0")
    try:
        for number in range(3):
            http.post(f"/api/v1/projects/{project['id']}/artifacts", json=artifact(f"before {number}"))
        out.wait_for("before 2")
        served.stop()  # the stream drops; the watcher keeps trying
        restarted = start_server(served.env, served.port, tmp_path / "server2.log")
        try:
            http2 = httpx.Client(base_url=restarted.url, headers=restarted.headers, timeout=30)
            for number in range(3):
                http2.post(f"/api/v1/projects/{project['id']}/artifacts", json=artifact(f"after {number}"))
            out.wait_for("after 2")
        finally:
            restarted.stop()
    finally:
        stop_watch(watcher)
    assert artifact_titles(out.lines) == [f"before {n}" for n in range(3)] + [f"after {n}" for n in range(3)]


class DroppingProxy:
    """A TCP proxy to the server that can drop every connection, and refuse new ones until `restore()`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()  # cut off during the handshake, as by a server going down
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.open += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        self.up = False
        for connection in self.open:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.open.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.drop()
        self.listener.close()


def test_watch_from_now_loses_nothing_when_dropped_before_its_first_event(served) -> None:  # type: ignore[no-untyped-def]
    """Without --after the watch starts where the stream opened, and resumes from there: the events
    of the outage come after the reconnection, though the watcher had received none before it."""
    http = httpx.Client(base_url=served.url, headers=served.headers, timeout=30)
    project = http.post("/api/v1/projects", json={"name": "Watched from now"}).json()
    http.post(f"/api/v1/projects/{project['id']}/artifacts", json=artifact("old"))
    proxy = DroppingProxy(served.port)
    watcher, out, err = start_watch(f"http://127.0.0.1:{proxy.port}", served.token, project["id"])
    try:
        err.wait_for("watching project")
        proxy.drop()  # the watcher has received nothing yet
        for number in range(2):
            http.post(f"/api/v1/projects/{project['id']}/artifacts", json=artifact(f"during {number}"))
        proxy.restore()
        err.wait_for("reconnected")
        http.post(f"/api/v1/projects/{project['id']}/artifacts", json=artifact("after"))
        out.wait_for('"after"')
    finally:
        stop_watch(watcher)
        proxy.close()
    assert artifact_titles(out.lines) == ["during 0", "during 1", "after"]  # not the old one, none lost


def artifact(title: str) -> dict[str, object]:
    return {"artifact_type": "user_input", "title": title, "content": {"text": title}}

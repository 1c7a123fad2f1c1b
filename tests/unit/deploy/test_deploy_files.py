"""Containerfile, compose.yaml and .containerignore, checked without a container engine.

Both files are parsed for real (dockerfile-parse, PyYAML) and held against the code: the CLI's
commands, the settings' variable names, the app's health routes, pyproject's console script and
the files in the repository. The worker's /proc healthcheck is run against fake /proc trees.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import click
import msgspec
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from app.__main__ import cli
from app.config import ENV_VARS, load_settings
from app.events.catalog import PAYLOADS
from app.main import create_app

REPO = Path(__file__).resolve().parents[3]
CONTAINERFILE = REPO / "Containerfile"
COMPOSE = REPO / "compose.yaml"
CONTAINERIGNORE = REPO / ".containerignore"

APP_SERVICES = ("migrate", "api", "worker")
LONG_RUNNING = ("postgres", "redis", "api", "worker")
KNOWN_ENV_VARS = {var for group in ENV_VARS.values() for var in group.values()}


# --- Containerfile ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    name: str
    value: str
    stage: int  # index of the FROM this instruction belongs to
    workdir: str  # WORKDIR in force when it runs


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: str
    from_stage: str | None
    index: int  # position among all instructions


@cache
def containerfile() -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO(CONTAINERFILE.read_bytes()))


@cache
def instructions() -> tuple[Instruction, ...]:
    out: list[Instruction] = []
    stage, workdir = -1, "/"
    for item in containerfile().structure:
        name = str(item["instruction"]).upper()
        value = str(item["value"])
        if name == "COMMENT":
            continue
        if name == "FROM":
            stage, workdir = stage + 1, "/"
        elif name == "WORKDIR":
            workdir = str(PurePosixPath(workdir, value))
        out.append(Instruction(name, value, stage, workdir))
    return tuple(out)


def stage_names() -> list[str]:
    names = []
    for ins in instructions():
        if ins.name == "FROM":
            words = ins.value.split()
            names.append(words[2] if len(words) == 3 and words[1].lower() == "as" else "")
    return names


def final_stage() -> int:
    return len(stage_names()) - 1


def in_stage(stage: int, name: str) -> list[Instruction]:
    return [ins for ins in instructions() if ins.stage == stage and ins.name == name]


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(arg, str) for arg in parsed), value
    return [str(arg) for arg in parsed]


def copies(stage: int | None = None) -> list[Copy]:
    out = []
    for index, ins in enumerate(instructions()):
        if ins.name != "COPY" or (stage is not None and ins.stage != stage):
            continue
        words = shlex.split(ins.value)
        flags = [w for w in words if w.startswith("--")]
        paths = exec_form(ins.value) if ins.value.lstrip().startswith("[") else [w for w in words if w not in flags]
        assert len(paths) >= 2, f"COPY needs a source and a destination: {ins.value}"
        from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        dest = str(PurePosixPath(ins.workdir, paths[-1]))
        out.append(Copy(tuple(paths[:-1]), dest + ("/" if paths[-1].endswith("/") else ""), from_stage, index))
    return out


def copied_to(copy: Copy, source: str) -> str:
    """Where `source` lands in the image: into a directory destination, or as the destination."""
    if copy.dest.endswith("/") or len(copy.sources) > 1:
        return str(PurePosixPath(copy.dest, PurePosixPath(source).name))
    return copy.dest


def env_of(stage: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in in_stage(stage, "ENV"):
        for word in shlex.split(ins.value):
            key, sep, value = word.partition("=")
            assert sep, f"ENV {ins.value!r}: write KEY=value"
            env[key] = value
    return env


def shell_commands(stage: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """Every simple command of every RUN, as (instruction index, argv without --mount flags)."""
    for index, ins in enumerate(instructions()):
        if ins.name != "RUN" or (stage is not None and ins.stage != stage):
            continue
        current: list[str] = []
        for word in [*shlex.split(ins.value), "&&"]:
            if word in {"&&", "||", ";"}:
                if current:
                    yield index, current
                current = []
            elif not (word.startswith("--mount=") and not current):
                current.append(word)


def uv_syncs() -> list[tuple[int, list[str]]]:
    return [(index, argv) for index, argv in shell_commands() if argv[:2] == ["uv", "sync"]]


# --- compose.yaml -----------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "compose.yaml has no services"
    return data


def service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose()["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    svc = services[name]
    assert isinstance(svc, dict)
    return svc


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: str) -> str:
    """What compose makes of `${VAR:-default}` when VAR is unset (a fresh checkout)."""
    return _INTERPOLATION.sub(lambda m: m.group("default") or "", value).replace("$$", "$")


def environment(name: str) -> dict[str, str]:
    raw = service(name).get("environment", {})
    if isinstance(raw, list):
        raw = dict(str(item).partition("=")[::2] for item in raw)
    assert isinstance(raw, dict)
    return {str(key): interpolate(str(value)) for key, value in raw.items()}


def command(name: str) -> list[str]:
    """The argv after the entrypoint: the service's command, or the image's CMD."""
    raw = service(name).get("command")
    if raw is None:
        return exec_form(in_stage(final_stage(), "CMD")[-1].value)
    return shlex.split(raw) if isinstance(raw, str) else [str(arg) for arg in raw]


def container_port(port: object) -> int:
    if isinstance(port, dict):
        return int(port["target"])
    return int(str(port).rsplit(":", 1)[-1].split("/")[0])


def healthcheck_argv(name: str) -> list[str]:
    check = service(name).get("healthcheck")
    assert isinstance(check, dict), f"{name} has no healthcheck"
    test = check.get("test")
    assert isinstance(test, list), f"{name}: healthcheck.test should be a list"
    return [str(arg) for arg in test]


def python_script(argv: Sequence[str]) -> str:
    assert list(argv[:3]) == ["CMD", "python", "-c"] and len(argv) == 4, f"not a `python -c` check: {argv}"
    return argv[3]


def option(argv: Sequence[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[list(argv).index(name) + 1]


# --- the CLI ----------------------------------------------------------------------------------


def resolve_cli(args: Sequence[str]) -> tuple[str, ...]:
    """Walk `botarmy ARGS` through the click groups and parse the leaf's options; return its path."""
    cmd: click.Command = cli
    rest = list(args)
    path: tuple[str, ...] = ()
    while isinstance(cmd, click.Group):
        assert rest, f"`botarmy {' '.join(path)}` needs a subcommand"
        word = rest.pop(0)
        sub = cmd.commands.get(word)
        assert sub is not None, f"{word!r} is not a command of `botarmy {' '.join(path)}`: {sorted(cmd.commands)}"
        cmd, path = sub, (*path, word)
    cmd.make_context(" ".join(("botarmy", *path)), rest)  # click.UsageError on unknown options or bad values
    return path


# --- Containerfile tests ----------------------------------------------------------------------


def test_containerfile_is_multi_stage_on_a_slim_base() -> None:
    parser = containerfile()
    assert parser.is_multistage and len(stage_names()) >= 2
    assert parser.parent_images, "no FROM"
    for image in parser.parent_images:
        assert "slim" in image.rsplit(":", 1)[-1], f"{image} is not a slim image"
    builders = {c.from_stage for c in copies(final_stage()) if c.from_stage}
    assert builders, "the final stage copies nothing from a build stage"
    assert builders <= set(stage_names()[:-1]), f"COPY --from names no earlier stage: {builders}"


def test_build_tools_stay_out_of_the_final_stage() -> None:
    for _, argv in shell_commands(final_stage()):
        assert argv[:2] != ["uv", "sync"] and "pip" not in argv[0], f"final stage installs: {argv}"
    assert uv_syncs(), "no `uv sync` at all"
    assert {instructions()[index].stage for index, _ in uv_syncs()} <= set(range(final_stage()))


def test_final_stage_runs_as_a_user_it_created_that_is_not_root() -> None:
    users = in_stage(final_stage(), "USER")
    assert users, "the final stage has no USER: the container would run as root"
    user = users[-1].value.split(":")[0]
    assert user not in {"root", "0"}
    if not user.isdigit():
        created = [
            argv for _, argv in shell_commands(final_stage()) if argv[0] in {"useradd", "adduser"} and argv[-1] == user
        ]
        assert created, f"USER {user} is never created in the final stage"


def test_dependencies_come_from_the_lock_file_before_the_source() -> None:
    syncs = uv_syncs()
    assert syncs, "no `uv sync` in the Containerfile"
    for _, argv in syncs:
        assert {"--locked", "--frozen"} & set(argv), f"not a lock-file install: {argv}"
        assert "--no-dev" in argv, f"dev dependencies in the image: {argv}"
        # Non-editable would move `app` into site-packages, away from alembic.ini and migrations/.
        assert "--no-editable" not in argv, f"{argv}: the code needs its source layout (REPO_ROOT)"
    deps = [index for index, argv in syncs if "--no-install-project" in argv]
    project = [index for index, argv in syncs if "--no-install-project" not in argv]
    assert deps and project, "expected a dependencies-only sync, then the project sync"

    def first_copy_of(source: str) -> int:
        found = [c.index for c in copies() if c.from_stage is None and source in c.sources]
        assert found, f"{source} is never copied"
        return found[0]

    assert first_copy_of("uv.lock") < deps[0] < first_copy_of("app") < project[-1]
    assert first_copy_of("pyproject.toml") < deps[0]
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("readme")
    if readme:  # hatchling refuses to build without it
        assert first_copy_of(readme) < project[-1]


def test_package_migrations_and_alembic_ini_stay_side_by_side() -> None:
    placed: dict[str, str] = {}
    for copy in copies():
        for source in copy.sources:
            if copy.from_stage is None and source in {"app", "migrations", "alembic.ini"}:
                placed[source] = copied_to(copy, source)
    assert set(placed) == {"app", "migrations", "alembic.ini"}, placed
    root = PurePosixPath(placed["app"]).parent
    assert placed == {name: str(root / name) for name in placed}, f"not side by side: {placed}"
    # The final stage takes that tree whole, at the same path (the venv's scripts and .pth are absolute).
    moved = [c for c in copies(final_stage()) if c.from_stage]
    assert any(c.sources == (str(root),) and c.dest.rstrip("/") == str(root) for c in moved), moved


def test_the_venv_is_on_the_runtime_path() -> None:
    builder_env = {k: v for stage in range(final_stage()) for k, v in env_of(stage).items()}
    venv = builder_env.get("UV_PROJECT_ENVIRONMENT")
    assert venv, "set UV_PROJECT_ENVIRONMENT so the venv's path is known and the same in both stages"
    assert f"{venv}/bin" in env_of(final_stage()).get("PATH", "").split(":"), "the venv's bin is not on PATH"
    assert any(c.dest.rstrip("/") == venv or venv.startswith(c.dest) for c in copies(final_stage()) if c.from_stage)
    assert env_of(final_stage()).get("PYTHONUNBUFFERED") == "1"


def test_entrypoint_is_the_project_console_script() -> None:
    entrypoint = exec_form(in_stage(final_stage(), "ENTRYPOINT")[-1].value)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["botarmy"]
    assert entrypoint[0] in scripts
    module, _, attr = scripts[entrypoint[0]].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    cmd = exec_form(in_stage(final_stage(), "CMD")[-1].value)
    assert resolve_cli(cmd) == ("serve",)


def test_containerfile_env_is_made_of_valid_settings() -> None:
    env = env_of(final_stage())
    ours = {k: v for k, v in env.items() if k.startswith("BOTARMY_") or k in {"DATABASE_URL", "REDIS_URL"}}
    assert ours, "the image sets no BOTARMY_* defaults"
    assert set(ours) <= KNOWN_ENV_VARS, f"unknown settings: {set(ours) - KNOWN_ENV_VARS}"
    settings = load_settings(ours)  # SettingsError on a bad value
    assert settings.server.host == "0.0.0.0"


def test_expose_matches_the_api_port_everywhere() -> None:
    exposed = {int(word.split("/")[0]) for ins in in_stage(final_stage(), "EXPOSE") for word in ins.value.split()}
    ports = service("api").get("ports")
    assert isinstance(ports, list) and ports, "the api publishes no port"
    assert {container_port(port) for port in ports} == exposed
    cmd = exec_form(in_stage(final_stage(), "CMD")[-1].value)
    assert {int(option(cmd, "--port")), int(option(command("api"), "--port"))} == exposed
    assert int(env_of(final_stage())["BOTARMY_PORT"]) in exposed


def test_image_healthcheck_is_valid_python_against_a_real_route() -> None:
    checks = in_stage(final_stage(), "HEALTHCHECK")
    assert checks, "no HEALTHCHECK in the final stage"
    argv = exec_form(checks[-1].value.split("CMD", 1)[1].strip())
    script = python_script(["CMD", *argv])
    compile(script, "HEALTHCHECK", "exec")
    assert health_paths(script) <= app_routes() and health_paths(script)


def test_copied_files_exist_and_are_not_ignored() -> None:
    patterns = [
        line.strip() for line in CONTAINERIGNORE.read_text().splitlines() if line.strip() and line[0] not in "#!"
    ]

    def ignored(relative: str) -> bool:
        parts = PurePosixPath(relative).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch(prefix, pattern.rstrip("/")) for prefix in prefixes for pattern in patterns)

    sources = [s for c in copies() if c.from_stage is None for s in c.sources]
    assert sources
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY {source}: not in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and p.suffix != ".pyc"]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            assert not ignored(relative), f"{relative} is copied but .containerignore drops it"
    for must_ignore in (".venv", ".git", "data", ".mypy_cache", "bench/results"):
        assert ignored(must_ignore), f".containerignore lets {must_ignore} into the build context"


# --- compose.yaml tests -----------------------------------------------------------------------


def test_compose_has_every_service() -> None:
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(compose()["services"])


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_a_healthcheck(name: str) -> None:
    argv = healthcheck_argv(name)
    check = service(name)["healthcheck"]
    assert not check.get("disable") and argv[0] in {"CMD", "CMD-SHELL"} and len(argv) > 1, argv
    if argv[:2] == ["CMD", "python"]:
        compile(python_script(argv), f"{name} healthcheck", "exec")


def test_migrate_is_one_shot() -> None:
    assert service("migrate").get("healthcheck", {"disable": True}) == {"disable": True}
    assert service("migrate").get("restart", "no") in {"no", "on-failure"}


def test_app_services_share_one_image_built_from_the_containerfile() -> None:
    builds = {name: service(name).get("build") for name in APP_SERVICES}
    images = {name: service(name).get("image") for name in APP_SERVICES}
    assert len({json.dumps(build, sort_keys=True) for build in builds.values()}) == 1, builds
    assert len(set(images.values())) == 1, images
    build = builds["api"]
    assert isinstance(build, dict), "build should name its context and dockerfile"
    assert (REPO / str(build["context"]) / str(build["dockerfile"])).resolve() == CONTAINERFILE
    for name in ("postgres", "redis"):
        assert "build" not in service(name) and service(name).get("image")


def test_app_services_keep_the_image_entrypoint() -> None:
    for name in APP_SERVICES:
        assert service(name).get("entrypoint") in (None, ["botarmy"]), name


@pytest.mark.parametrize(
    ("name", "dependency", "condition"),
    [
        ("migrate", "postgres", "service_healthy"),
        ("api", "migrate", "service_completed_successfully"),
        ("api", "redis", "service_healthy"),
        ("worker", "migrate", "service_completed_successfully"),
        ("worker", "redis", "service_healthy"),
    ],
)
def test_start_order(name: str, dependency: str, condition: str) -> None:
    depends_on = service(name).get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
    assert depends_on.get(dependency, {}).get("condition") == condition


@pytest.mark.parametrize(
    ("name", "expected"), [("api", ("serve",)), ("worker", ("worker",)), ("migrate", ("db", "upgrade"))]
)
def test_compose_commands_are_real_cli_commands(name: str, expected: tuple[str, ...]) -> None:
    assert resolve_cli(command(name)) == expected


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_env_is_made_of_valid_settings(name: str) -> None:
    env = environment(name)
    assert env, f"{name} sets no environment"
    assert set(env) <= KNOWN_ENV_VARS, f"{name}: unknown settings {set(env) - KNOWN_ENV_VARS}"
    settings = load_settings(env)  # SettingsError on a bad value
    assert settings.redis.enabled and not settings.db.is_sqlite and settings.app.env == "production"


def test_urls_point_at_the_compose_services() -> None:
    env = environment("api")
    database = urlsplit(env["DATABASE_URL"])
    postgres = environment("postgres")
    assert database.hostname == "postgres" and database.port in (None, 5432)
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres.get("POSTGRES_PASSWORD")
    assert database.path.lstrip("/") == postgres.get("POSTGRES_DB", postgres["POSTGRES_USER"])
    broker = urlsplit(env["REDIS_URL"])
    assert broker.hostname == "redis" and broker.port in (None, 6379)
    assert environment("worker") == env == environment("migrate")


def test_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes") or {})
    for name in ("postgres", "redis"):
        volumes = [str(v).split(":")[0] for v in service(name).get("volumes", [])]
        assert volumes, f"{name} keeps its data in the container"
        assert set(volumes) <= declared, f"{name}: undeclared volumes {set(volumes) - declared}"


def test_api_healthcheck_asks_readiness_on_the_api_port() -> None:
    script = python_script(healthcheck_argv("api"))
    assert health_paths(script) == {"/health/ready"}
    ports = {int(m) for m in re.findall(r"127\.0\.0\.1:(\d+)", script)}
    assert ports == {container_port(port) for port in service("api")["ports"]}
    assert health_paths(script) <= app_routes()


# --- the worker's /proc healthcheck -----------------------------------------------------------


def worker_check(proc_root: Path) -> int:
    """Run the worker's healthcheck with /proc swapped for `proc_root`."""
    script = python_script(healthcheck_argv("worker"))
    assert '"/proc' in script
    result = subprocess.run([sys.executable, "-c", script.replace('"/proc', f'"{proc_root}')], check=False)
    return result.returncode


def fake_process(root: Path, pid: int, ppid: int, argv: Sequence[str], state: str = "S") -> None:
    directory = root / str(pid)
    directory.mkdir()
    (directory / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in argv))
    comm = argv[0].rsplit("/", 1)[-1][:15] if argv else "kworker) x"
    (directory / "stat").write_text(f"{pid} ({comm}) {state} {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0\n")


SUPERVISOR = ["/app/.venv/bin/python", "/app/.venv/bin/botarmy", "worker", "--workers", "2"]
API = ["/app/.venv/bin/python", "/app/.venv/bin/botarmy", "serve", "--host", "0.0.0.0"]


@pytest.mark.parametrize(
    ("processes", "healthy"),
    [
        ([(1, 0, SUPERVISOR, "S"), (7, 1, SUPERVISOR, "S"), (8, 1, SUPERVISOR, "R")], True),
        ([(1, 0, ["/sbin/catatonit", "--"], "S"), (2, 1, SUPERVISOR, "S"), (3, 2, SUPERVISOR, "S")], True),
        ([(1, 0, SUPERVISOR, "S"), (9, 1, [], "S")], True),  # a child with an odd comm and no cmdline
        ([(1, 0, SUPERVISOR, "S")], False),  # supervisor without workers
        ([(1, 0, SUPERVISOR, "S"), (7, 1, SUPERVISOR, "Z")], False),  # its worker died
        ([(1, 0, API, "S"), (7, 1, API, "S")], False),  # not a worker
        ([(1, 0, ["/sbin/catatonit"], "S"), (7, 1, SUPERVISOR, "S")], False),  # orphaned worker
        ([], False),
    ],
)
def test_worker_healthcheck_reads_proc(
    tmp_path: Path, processes: list[tuple[int, int, list[str], str]], healthy: bool
) -> None:
    for pid, ppid, argv, state in processes:
        fake_process(tmp_path, pid, ppid, argv, state)
    (tmp_path / "self").mkdir()  # not a pid: ignored
    assert (worker_check(tmp_path) == 0) is healthy


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_worker_healthcheck_sees_a_real_supervisor_and_its_child() -> None:
    argv = healthcheck_argv("worker")
    fork = "import os, time\nos.fork()\ntime.sleep(60)\n"
    supervisor = subprocess.Popen(
        [sys.executable, "-c", fork, "/app/.venv/bin/botarmy", "worker", "--workers", "1"], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while subprocess.run([sys.executable, *argv[2:]], check=False).returncode != 0:
            assert time.monotonic() < deadline, "the healthcheck never saw the running supervisor"
            time.sleep(0.1)
    finally:
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()


# --- the app ----------------------------------------------------------------------------------


def health_paths(script: str) -> set[str]:
    urls = re.findall(r"https?://[^/'\"]+(/[^'\"]*)", script)
    literals = re.findall(r"['\"](/[^'\"]*)['\"]", script)
    return set(urls) | set(literals)


@cache
def app_routes() -> frozenset[str]:
    env: Mapping[str, str] = {"BOTARMY_ENV": "test", "BOTARMY_LOG_LEVEL": "WARNING"}  # nothing is opened
    return frozenset(route.path for route in create_app(load_settings(env)).routes)


def test_the_readme_documents_every_event_type() -> None:
    readme = (REPO / "README.md").read_text()
    for event_type, payload in PAYLOADS.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{event_type}` |")), None)
        assert row is not None, f"README: no row for {event_type}"
        for field in msgspec.structs.fields(payload):
            assert f"`{field.name}`" in row, f"README: {event_type} lacks {field.name}"

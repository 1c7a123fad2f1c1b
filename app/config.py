"""Settings from the environment.

Every variable is read once, validated, and turned into small frozen groups, one per concern.
A wrong value stops start-up with one line that names the variable and says why.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

ENV_PREFIX = "BOTARMY_"
REPO_ROOT = Path(__file__).resolve().parent.parent


# What makes a directory `.bmad-core`-shaped: at least one of these in it.
BMAD_PARTS = ("agents", "agent-teams", "workflows", "templates", "tasks", "checklists", "data", "core-config.yaml")


class SettingsError(Exception):
    """A setting is wrong: the message names the variable and the reason, on one line."""


class AppSettings(msgspec.Struct, frozen=True, kw_only=True):
    env: Literal["dev", "test", "production"] = "dev"
    data_dir: str = "data"
    # A `.bmad-core`-shaped directory whose files add to (and replace by id) the ones we ship.
    bmad_dir: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


class DatabaseSettings(msgspec.Struct, frozen=True, kw_only=True):
    url: str = ""
    pool_size: Annotated[int, Meta(ge=1, le=200)] = 10
    connect_timeout: Annotated[float, Meta(gt=0, le=120)] = 5.0
    echo: bool = False

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def sqlite_file(self) -> str:
        """The file of a SQLite database (or `:memory:`); "" for any other."""
        return self.url.split(":///", 1)[1] if self.is_sqlite else ""


class RedisSettings(msgspec.Struct, frozen=True, kw_only=True):
    url: str | None = None
    # Prefix of every Redis key and channel we use, so that several deployments
    # (or test runs) can share one Redis server without seeing each other.
    namespace: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "botarmy"

    @property
    def enabled(self) -> bool:
        return self.url is not None


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 8000
    max_body_bytes: Annotated[int, Meta(ge=1024, le=512 * 1024 * 1024)] = 1024 * 1024
    # Origins a browser client may call from, comma-separated ("*" for any); empty: no CORS.
    cors_origins: Annotated[str, Meta(max_length=4000)] = ""
    # Requests per minute per token (per address for requests without one).
    rate_limit_per_minute: Annotated[int, Meta(ge=1, le=1_000_000)] = 1200
    # Failed authentications (no token, an unknown, revoked or expired one) per minute per client address.
    auth_failures_per_minute: Annotated[int, Meta(ge=1, le=1_000_000)] = 60
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated addresses or
    # networks, "*" for any); empty: none, the TCP peer is the client.
    trusted_proxies: Annotated[str, Meta(max_length=4000)] = ""
    # `botarmy serve`'s doors: open connections at most (HTTP and WebSocket; more are answered 503
    # and closed), seconds a connection may stay idle (before its first request and between
    # requests), seconds a request's headers may take to arrive from the first byte (slowloris),
    # and seconds its body may take after them.
    max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] = 2048
    keep_alive_seconds: Annotated[int, Meta(ge=1, le=3600)] = 5
    header_timeout_seconds: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    body_timeout_seconds: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    ws_max_message_bytes: Annotated[int, Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    # Open streams (WebSocket and SSE) per token, and in all, per api process: more are closed at
    # once (4429 for a token at its cap, 1013 for a process at its cap; SSE: 429, 503), with the reason.
    ws_max_connections_per_token: Annotated[int, Meta(ge=1, le=1_000_000)] = 100
    ws_max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000
    # Events a stream client may be behind before it is told to reconnect with `after`.
    stream_max_backlog: Annotated[int, Meta(ge=10, le=1_000_000)] = 1000
    # A stream idle this long gets a heartbeat (which also finds dead connections).
    stream_heartbeat_seconds: Annotated[float, Meta(gt=0, le=3600)] = 15.0
    # `botarmy serve`'s youngest-generation GC threshold (Python's default: 700). Fanning one event out
    # to many sockets keeps thousands of objects briefly alive; collected every 700 allocations, they
    # were promoted to the oldest generation and set off full collections of ~100 ms (bench/README.md).
    gc_young_threshold: Annotated[int, Meta(ge=100, le=1_000_000)] = 20_000
    # `/metrics` without a token on a port of its own (for a scraper); unset: only the admin route.
    metrics_port: Annotated[int, Meta(ge=1, le=65535)] | None = None
    metrics_host: str = "127.0.0.1"
    # A document export (md, html, zip) of more than this many bytes of text (or reading more stored
    # document JSON, measured first by the database), or a zip of more files, is refused with 413;
    # at most this many exports at once read their documents and build the file (in worker threads).
    export_max_bytes: Annotated[int, Meta(ge=1024, le=4 * 1024 * 1024 * 1024)] = 64 * 1024 * 1024
    export_max_files: Annotated[int, Meta(ge=1, le=1_000_000)] = 5000
    export_concurrency: Annotated[int, Meta(ge=1, le=64)] = 2
    # On SIGTERM/SIGINT `botarmy serve` closes its streams (1001) and then waits at most this long
    # for requests still in flight before it stops (under podman's default 10 s before it kills).
    grace_seconds: Annotated[float, Meta(ge=0, le=3600)] = 8.0

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    # A running task holds a lease its worker renews; a lease that runs out means the
    # worker is gone and the sweep hands the task to another one.
    lease_seconds: Annotated[float, Meta(ge=1, le=3600)] = 15.0
    sweep_interval_seconds: Annotated[float, Meta(ge=0.1, le=600)] = 5.0
    # A task still `pending` this long after it was stored was never enqueued (broker down).
    pending_requeue_seconds: Annotated[float, Meta(ge=0.1, le=3600)] = 10.0
    # A task `queued` this long is enqueued again: its message was lost, or went to a worker that
    # died before claiming it. A duplicate message is harmless (only one claim can win).
    queued_requeue_seconds: Annotated[float, Meta(ge=1, le=86400)] = 30.0
    concurrency: Annotated[int, Meta(ge=1, le=1000)] = 10
    # On SIGTERM/SIGINT a worker stops taking jobs and lets running attempts finish for this long;
    # what is still running then is handed back (queued again at once). Under podman's default
    # 10 s before it kills.
    grace_seconds: Annotated[float, Meta(ge=0, le=3600)] = 8.0
    # Artifacts older than this are purged by the sweep (never those an open task or request uses).
    artifact_retention_days: Annotated[int, Meta(ge=1, le=36500)] | None = 90
    retention_interval_seconds: Annotated[float, Meta(ge=1, le=86400)] = 3600.0


ModelRef = Annotated[
    str, Meta(pattern=r"^(offline|openai|openai_compatible|anthropic|gemini):[A-Za-z0-9_.:/@-]{1,100}$")
]
AGENT_TYPES = ("orchestrator", "analyst", "architect", "coder", "tester", "deployer")


class ModelSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Which provider and model each agent uses (`provider:model`), and how calls are made.

    Keys come only from the environment and are never logged or returned (see `__repr__`).
    """

    default: ModelRef = "offline:botarmy-offline-1"
    orchestrator: ModelRef | None = None
    analyst: ModelRef | None = None
    architect: ModelRef | None = None
    coder: ModelRef | None = None
    tester: ModelRef | None = None
    deployer: ModelRef | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    gemini_api_key: str | None = None
    gemini_base_url: str | None = None
    compatible_base_url: str | None = None
    compatible_api_key: str | None = None
    timeout_seconds: Annotated[float, Meta(gt=0, le=3600)] = 120.0
    # Waits before the 2nd, 3rd, ... attempt of a call that failed transiently.
    retry_delays: Annotated[str, Meta(pattern=r"^\s*(\d+(\.\d+)?\s*(,\s*\d+(\.\d+)?\s*)*)?$")] = "1,2,4"
    # Seconds of silence after which the sweep fails a working task (unless its settings say otherwise).
    task_timeout_seconds: Annotated[int, Meta(ge=1, le=86400)] = 300
    # A long call sends a progress event at least this often.
    progress_interval_seconds: Annotated[float, Meta(gt=0, le=600)] = 30.0
    # Per call: a task's tokens (in + out) may not pass this; None: no per-task limit.
    task_token_limit: Annotated[int, Meta(ge=1)] | None = None

    def for_agent(self, agent_type: str) -> tuple[str, str]:
        ref: str = getattr(self, agent_type, None) or self.default
        provider, _, model = ref.partition(":")
        return provider, model

    @property
    def retry_delay_list(self) -> list[float]:
        return [float(part) for part in self.retry_delays.split(",") if part.strip()]

    def secrets(self) -> list[str]:
        return [
            key
            for key in (self.openai_api_key, self.anthropic_api_key, self.gemini_api_key, self.compatible_api_key)
            if key
        ]

    def __repr__(self) -> str:  # never print the keys
        return f"ModelSettings(default={self.default!r}, ...)"


ExpiryAction = Literal["approve", "reject", "escalate", "pause"]
KindSeconds = Annotated[str, Meta(pattern=r"^\s*([a-z_]+=\d+(\.\d+)?\s*(,\s*[a-z_]+=\d+(\.\d+)?\s*)*)?$")]
KindActions = Annotated[
    str,
    Meta(
        pattern=r"^\s*([a-z_]+=(approve|reject|escalate|pause)\s*(,\s*[a-z_]+=(approve|reject|escalate|pause)\s*)*)?$"
    ),
]


class HitlSettings(msgspec.Struct, frozen=True, kw_only=True):
    """When a human is asked, how long a question may wait, and what happens when it is not answered."""

    # An agent answer less confident than this waits for a human (a project may set its own).
    confidence_threshold: Annotated[float, Meta(ge=0, le=1)] = 0.8
    # Under high oversight, a model call estimated to cost more than this (USD) waits for approval
    # (a project's `settings.call_cost_limit_usd` wins); unset: no such check.
    call_cost_limit_usd: Annotated[float, Meta(ge=0)] | None = 1.0
    # Rejections of one step or task redone before the next rejection escalates instead.
    max_redos: Annotated[int, Meta(ge=0, le=100)] = 3
    # Seconds a request may wait; `kind=seconds,…` overrides per kind.
    timeout_seconds: Annotated[float, Meta(gt=0, le=365 * 86400)] = 7 * 86400.0
    timeouts_by_kind: KindSeconds = ""
    # What expiry does: approve, reject, escalate (a new, critical request for an admin) or pause
    # (the execution is paused; resuming it asks again); `kind=action,…` overrides per kind.
    expiry_action: ExpiryAction = "pause"
    expiry_actions_by_kind: KindActions = ""
    # An `hitl_request_expiring` event goes out this long before a request expires.
    warning_seconds: Annotated[float, Meta(ge=0, le=365 * 86400)] = 3600.0

    def timeout_for(self, kind: str) -> float:
        return float(_by_kind(self.timeouts_by_kind).get(kind, self.timeout_seconds))

    def expiry_action_for(self, kind: str) -> str:
        return _by_kind(self.expiry_actions_by_kind).get(kind, self.expiry_action)


def _by_kind(spec: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in spec.split(",") if part.strip())
    return {kind.strip(): value.strip() for kind, value in pairs}


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    app: AppSettings
    db: DatabaseSettings
    redis: RedisSettings
    server: ServerSettings
    worker: WorkerSettings
    models: ModelSettings
    hitl: HitlSettings = HitlSettings()


# The one table of environment variables: group -> field -> variable.
ENV_VARS: dict[str, dict[str, str]] = {
    "app": {
        "env": "BOTARMY_ENV",
        "data_dir": "BOTARMY_DATA_DIR",
        "bmad_dir": "BOTARMY_BMAD_DIR",
        "log_level": "BOTARMY_LOG_LEVEL",
        "log_format": "BOTARMY_LOG_FORMAT",
    },
    "db": {
        "url": "DATABASE_URL",
        "pool_size": "BOTARMY_DB_POOL_SIZE",
        "connect_timeout": "BOTARMY_DB_CONNECT_TIMEOUT",
        "echo": "BOTARMY_DB_ECHO",
    },
    "redis": {"url": "REDIS_URL", "namespace": "BOTARMY_REDIS_NAMESPACE"},
    "server": {
        "host": "BOTARMY_HOST",
        "port": "BOTARMY_PORT",
        "max_body_bytes": "BOTARMY_MAX_BODY_BYTES",
        "cors_origins": "BOTARMY_CORS_ORIGINS",
        "rate_limit_per_minute": "BOTARMY_RATE_LIMIT_PER_MINUTE",
        "auth_failures_per_minute": "BOTARMY_AUTH_FAILURES_PER_MINUTE",
        "trusted_proxies": "BOTARMY_TRUSTED_PROXIES",
        "max_connections": "BOTARMY_MAX_CONNECTIONS",
        "keep_alive_seconds": "BOTARMY_KEEP_ALIVE_SECONDS",
        "header_timeout_seconds": "BOTARMY_HEADER_TIMEOUT_SECONDS",
        "body_timeout_seconds": "BOTARMY_BODY_TIMEOUT_SECONDS",
        "ws_max_message_bytes": "BOTARMY_WS_MAX_MESSAGE_BYTES",
        "ws_max_connections_per_token": "BOTARMY_WS_MAX_CONNECTIONS_PER_TOKEN",
        "ws_max_connections": "BOTARMY_WS_MAX_CONNECTIONS",
        "stream_max_backlog": "BOTARMY_STREAM_MAX_BACKLOG",
        "stream_heartbeat_seconds": "BOTARMY_STREAM_HEARTBEAT_SECONDS",
        "gc_young_threshold": "BOTARMY_GC_YOUNG_THRESHOLD",
        "metrics_port": "BOTARMY_METRICS_PORT",
        "metrics_host": "BOTARMY_METRICS_HOST",
        "export_max_bytes": "BOTARMY_EXPORT_MAX_BYTES",
        "export_max_files": "BOTARMY_EXPORT_MAX_FILES",
        "export_concurrency": "BOTARMY_EXPORT_CONCURRENCY",
        "grace_seconds": "BOTARMY_API_GRACE_SECONDS",
    },
    "worker": {
        "lease_seconds": "BOTARMY_TASK_LEASE_SECONDS",
        "sweep_interval_seconds": "BOTARMY_SWEEP_INTERVAL_SECONDS",
        "pending_requeue_seconds": "BOTARMY_PENDING_REQUEUE_SECONDS",
        "queued_requeue_seconds": "BOTARMY_QUEUED_REQUEUE_SECONDS",
        "concurrency": "BOTARMY_WORKER_CONCURRENCY",
        "grace_seconds": "BOTARMY_WORKER_GRACE_SECONDS",
        "artifact_retention_days": "BOTARMY_ARTIFACT_RETENTION_DAYS",
        "retention_interval_seconds": "BOTARMY_RETENTION_INTERVAL_SECONDS",
    },
    "models": {
        "default": "BOTARMY_MODEL",
        **{agent: f"BOTARMY_MODEL_{agent.upper()}" for agent in AGENT_TYPES},
        "openai_api_key": "OPENAI_API_KEY",
        "openai_base_url": "OPENAI_BASE_URL",
        "anthropic_api_key": "ANTHROPIC_API_KEY",
        "anthropic_base_url": "ANTHROPIC_BASE_URL",
        "gemini_api_key": "GEMINI_API_KEY",
        "gemini_base_url": "BOTARMY_GEMINI_BASE_URL",
        "compatible_base_url": "BOTARMY_OPENAI_COMPATIBLE_BASE_URL",
        "compatible_api_key": "BOTARMY_OPENAI_COMPATIBLE_API_KEY",
        "timeout_seconds": "BOTARMY_MODEL_TIMEOUT_SECONDS",
        "retry_delays": "BOTARMY_MODEL_RETRY_DELAYS",
        "task_timeout_seconds": "BOTARMY_TASK_TIMEOUT_SECONDS",
        "progress_interval_seconds": "BOTARMY_PROGRESS_INTERVAL_SECONDS",
        "task_token_limit": "BOTARMY_TASK_TOKEN_LIMIT",
    },
    "hitl": {
        "confidence_threshold": "BOTARMY_CONFIDENCE_THRESHOLD",
        "max_redos": "BOTARMY_HITL_MAX_REDOS",
        "call_cost_limit_usd": "BOTARMY_CALL_COST_LIMIT_USD",
        "timeout_seconds": "BOTARMY_HITL_TIMEOUT_SECONDS",
        "timeouts_by_kind": "BOTARMY_HITL_TIMEOUTS",
        "expiry_action": "BOTARMY_HITL_EXPIRY_ACTION",
        "expiry_actions_by_kind": "BOTARMY_HITL_EXPIRY_ACTIONS",
        "warning_seconds": "BOTARMY_HITL_WARNING_SECONDS",
    },
}

_GROUP_TYPES: dict[str, type[msgspec.Struct]] = {
    "app": AppSettings,
    "db": DatabaseSettings,
    "redis": RedisSettings,
    "server": ServerSettings,
    "worker": WorkerSettings,
    "models": ModelSettings,
    "hitl": HitlSettings,
}
_ERROR_PATH = re.compile(r"^(?P<reason>.*?)(?: - at `\$\.(?P<field>\w+)`)?$")


def _load_group(group: str, environ: Mapping[str, str]) -> Any:
    names = ENV_VARS[group]
    raw = {field: environ[var] for field, var in names.items() if environ.get(var, "") != ""}
    try:
        # strict=False lets msgspec parse "15" as 15 and "true" as True.
        return msgspec.convert(raw, _GROUP_TYPES[group], strict=False)
    except msgspec.ValidationError as exc:
        match = _ERROR_PATH.match(str(exc))
        field = match.group("field") if match else None
        reason = match.group("reason") if match else str(exc)
        var = names.get(field or "", f"{ENV_PREFIX}*")
        value = environ.get(var, "")
        raise SettingsError(f"{var}={value!r} is invalid: {reason}") from None


def normalize_database_url(url: str) -> str:
    """Accept the URLs people write and name the async driver SQLAlchemy needs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        msg = f"DATABASE_URL={url!r} is invalid: expected postgresql://… or sqlite:///…"
        raise SettingsError(msg)
    scheme = scheme.lower()
    if scheme in {"postgres", "postgresql", "postgresql+asyncpg"}:
        return f"postgresql+asyncpg://{rest}"
    if scheme in {"sqlite", "sqlite+aiosqlite"}:
        if not rest.startswith("/"):
            msg = f"DATABASE_URL={url!r} is invalid: a SQLite URL needs a path, as sqlite:///data/botarmy.db"
            raise SettingsError(msg)
        return f"sqlite+aiosqlite://{rest}"
    msg = f"DATABASE_URL={url!r} is invalid: unsupported scheme {scheme!r}; use postgresql:// or sqlite:///"
    raise SettingsError(msg)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    groups = {name: _load_group(name, environ) for name in _GROUP_TYPES}
    app: AppSettings = groups["app"]
    db: DatabaseSettings = groups["db"]
    if db.url:
        db = msgspec.structs.replace(db, url=normalize_database_url(db.url))
    else:
        db = msgspec.structs.replace(db, url=f"sqlite+aiosqlite:///{app.data_path / 'botarmy.db'}")
    if app.bmad_dir is not None:
        check_bmad_dir(app.bmad_dir)
    redis: RedisSettings = groups["redis"]
    if redis.url is not None and not redis.url.startswith(("redis://", "rediss://", "unix://")):
        msg = f"REDIS_URL={redis.url!r} is invalid: expected redis://host:port/db, rediss://… or unix://…"
        raise SettingsError(msg)
    return Settings(
        app=app,
        db=db,
        redis=redis,
        server=groups["server"],
        worker=groups["worker"],
        models=groups["models"],
        hitl=groups["hitl"],
    )


def check_bmad_dir(value: str) -> None:
    """`BOTARMY_BMAD_DIR` names an existing directory with at least one BMAD folder or file in it."""
    path = Path(value).expanduser()
    if not path.exists():
        reason = "no such directory"
    elif not path.is_dir():
        reason = "not a directory"
    elif not any((path / part).exists() for part in BMAD_PARTS):
        reason = f"holds none of {', '.join(BMAD_PARTS)}"
        inner = next((path / name for name in ("bmad-core", ".bmad-core") if (path / name).is_dir()), None)
        if inner is not None:
            reason += f" (did you mean {str(inner)!r}?)"
    else:
        return
    msg = f"BOTARMY_BMAD_DIR={value!r} is invalid: {reason}"
    raise SettingsError(msg)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()

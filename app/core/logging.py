"""structlog for the web process and the worker alike."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from app.config import AppSettings


def shared_processors() -> list[structlog.types.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


# Secrets that can reach a log line through a library (a request line with ?token=, a header dump,
# a URL with a password): every line of both log pipelines goes through `redact`.
_SECRET_PATTERNS = (
    (re.compile(r"(?i)([?&]token=)[^&\s\"'#]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"bat_[A-Za-z0-9_-]{8,}"), "bat_[redacted]"),
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1[redacted]@"),
)


# The configured keys themselves (model providers): whatever a library prints, they never pass.
_known_secrets: list[str] = []


# A run of this many characters of a key, in any case, is a partial echo of it.
ECHO_CHARS = 8
REDACTED = "[redacted]"


def redact_secret(text: str, secret: str | None) -> str:
    """`text` without `secret`, in any case, nor any part of it of `ECHO_CHARS` characters or more
    (a provider that echoes the key's start, or lowercased, in its error message)."""
    if not secret or len(secret) < ECHO_CHARS or len(text) < ECHO_CHARS:
        return text
    key = secret.lower()
    grams = {key[start : start + ECHO_CHARS] for start in range(len(key) - ECHO_CHARS + 1)}
    lowered = text.lower()
    covered_until, spans = -1, list[tuple[int, int]]()
    for start in range(len(text) - ECHO_CHARS + 1):
        if lowered[start : start + ECHO_CHARS] in grams:
            end = start + ECHO_CHARS
            if spans and start <= covered_until:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
            covered_until = end
    if not spans:
        return text
    pieces, last = list[str](), 0
    for start, end in spans:
        pieces += [text[last:start], REDACTED]
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    for secret in _known_secrets:
        text = redact_secret(text, secret)
    return text


def redact_event(_logger: Any, _method: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    return {key: redact(value) if isinstance(value, str) else value for key, value in event_dict.items()}


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def configure_logging(settings: AppSettings, secrets: list[str] | None = None) -> None:
    _known_secrets[:] = [secret for secret in secrets or [] if len(secret) >= ECHO_CHARS]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    level = logging.getLevelName(settings.log_level)
    structlog.configure(
        processors=[*shared_processors(), redact_event, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s", force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    # Driver chatter at INFO is noise in both processes.
    for noisy in ("httpx", "taskiq", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))

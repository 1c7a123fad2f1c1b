"""One tree of domain errors, and the one place that maps errors to HTTP responses.

Responses keep Litestar's shape `{"status_code", "detail", "extra"}`; nothing internal
(stack traces, SQL, driver messages) ever reaches a client.
"""

from __future__ import annotations

from typing import Any

import structlog
from advanced_alchemy.exceptions import IntegrityError as AAIntegrityError
from advanced_alchemy.exceptions import NotFoundError as AANotFoundError
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, TooManyRequestsException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

logger = structlog.get_logger(__name__)

# Free-form JSON (settings, metadata) may nest this deep; typed fields are bounded by their Struct.
MAX_JSON_DEPTH = 10


class AppError(Exception):
    status_code = 400

    def __init__(self, detail: str, *, extra: dict[str, Any] | list[Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ForbiddenError(AppError):
    status_code = 403


class NotFoundError(AppError):
    status_code = 404


class ConflictError(AppError):
    status_code = 409


class TooLargeError(AppError):
    status_code = 413


class InvalidInputError(AppError):
    status_code = 422


class TooManyError(AppError):
    """Past a limit other than the request rate (say, of open streams): 429 with the reason."""

    status_code = 429


class ServiceUnavailableError(AppError):
    status_code = 503


def _problem(
    status_code: int, detail: str, extra: Any = None, headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"status_code": status_code, "detail": detail}
    if extra is not None:
        body["extra"] = extra
    if status_code == 503:
        headers = {**(headers or {}), "Retry-After": "5"}
    return Response(body, status_code=status_code, media_type=MediaType.JSON, headers=headers)


def app_error_handler(_: Request[Any, Any, Any], exc: AppError) -> Response[dict[str, Any]]:
    return _problem(exc.status_code, exc.detail, exc.extra)


def not_found_handler(_: Request[Any, Any, Any], exc: AANotFoundError) -> Response[dict[str, Any]]:
    return _problem(404, "No such resource: the id does not exist.")


def integrity_error_handler(_: Request[Any, Any, Any], exc: AAIntegrityError) -> Response[dict[str, Any]]:
    return _problem(409, "The change conflicts with data already stored (a duplicate or a missing reference).")


# PostgreSQL's undefined_table and undefined_column; SQLite says it in words.
_SCHEMA_SQLSTATES = frozenset({"42P01", "42703"})
_SQLITE_SCHEMA_MESSAGES = ("no such table", "no such column")


def is_schema_error(exc: BaseException) -> bool:
    """True when a query failed because the schema lacks a table or column: not migrated."""
    for cause in _causes(exc):
        if getattr(cause, "sqlstate", None) in _SCHEMA_SQLSTATES:
            return True
        if type(cause).__module__ == "sqlite3" and str(cause).startswith(_SQLITE_SCHEMA_MESSAGES):
            return True
    return False


SCHEMA_DETAIL = "The database schema is not up to date: an operator must run `botarmy db upgrade`."


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, PoolTimeoutError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _causes(exc: BaseException) -> list[BaseException]:
    """The error and what caused it: libraries wrap driver errors (taskiq's SendTaskError)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def too_deep_handler(_: Request[Any, Any, Any], exc: RecursionError) -> Response[dict[str, Any]]:
    # msgspec gives up on JSON nested deeper than Python's recursion limit while decoding a body.
    return _problem(400, f"The JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels are accepted).")


def is_unavailable_error(exc: BaseException) -> bool:
    """True when the error means a backing service is unreachable, not that the request is wrong."""
    return any(_is_unavailable(cause) for cause in _causes(exc))


def unavailable_component(exc: BaseException) -> str:
    redis_errors = (RedisConnectionError, RedisTimeoutError)
    return "redis" if any(isinstance(cause, redis_errors) for cause in _causes(exc)) else "database"


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, TooManyRequestsException):
        headers = dict(exc.headers or {})
        limit, reset = headers.get("RateLimit-Limit", "?"), headers.get("RateLimit-Reset", "60")
        headers["Retry-After"] = reset
        detail = (
            exc.detail
            if getattr(exc, "counts_failures", False)
            else f"Rate limit exceeded: at most {limit} requests a minute per token; retry in {reset} s."
        )
        return _problem(429, detail, None, headers)
    if isinstance(exc, HTTPException):
        return _problem(exc.status_code, exc.detail, exc.extra or None, dict(exc.headers or {}))
    if is_schema_error(exc):
        logger.error("schema_not_migrated", error=type(exc).__name__, path=request.url.path)
        return _problem(503, SCHEMA_DETAIL, {"component": "schema"})
    if is_unavailable_error(exc):
        component = unavailable_component(exc)
        logger.warning("service_unavailable", component=component, error=type(exc).__name__, path=request.url.path)
        return _problem(503, f"The {component} is unavailable; try again shortly.", {"component": component})
    logger.exception("unhandled_error", path=request.url.path)
    return _problem(500, "Internal server error.")


exception_handlers: dict[type[Exception] | int, Any] = {
    AppError: app_error_handler,
    AANotFoundError: not_found_handler,
    AAIntegrityError: integrity_error_handler,
    RecursionError: too_deep_handler,
    Exception: internal_error_handler,
}

"""`GET /metrics` (admin tokens), and the same text without a token on `BOTARMY_METRICS_PORT`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from litestar import Controller, Request, Response, get

from app.core.exceptions import is_unavailable_error
from app.core.security import Role, needs
from app.metrics.services import CONTENT_TYPE, Scraper

logger = structlog.get_logger(__name__)

READ_TIMEOUT_SECONDS = 5.0


class MetricsController(Controller):
    path = "/metrics"
    tags = ["metrics"]
    opt = needs(Role.ADMIN)
    include_in_schema = False  # Prometheus text, for scrapers: not part of the JSON api

    @get("/", operation_id="Metrics", media_type=CONTENT_TYPE)
    async def metrics(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        scraper: Scraper = request.app.state.metrics
        return Response(await scraper.render(), media_type=CONTENT_TYPE)


async def start_metrics_server(scraper: Scraper, host: str, port: int) -> asyncio.Server:
    """A plain HTTP listener answering `GET /metrics`: for a scraper on a port not published to clients."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_SECONDS)
            while (await asyncio.wait_for(reader.readline(), READ_TIMEOUT_SECONDS)).strip():
                pass  # the headers: nothing in them changes the answer
            method, target, *_ = [*request_line.decode("latin-1").split(), "", ""]
            status, body, media_type = await _answer(scraper, method, target.split("?", 1)[0])
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {media_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(answer, host, port)


async def _answer(scraper: Scraper, method: str, path: str) -> tuple[str, bytes, str]:
    if path != "/metrics":
        return "404 Not Found", b"GET /metrics\n", "text/plain"
    if method != "GET":
        return "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
    try:
        return "200 OK", await scraper.render(), CONTENT_TYPE
    except Exception as exc:
        if not is_unavailable_error(exc):
            logger.exception("metrics_failed")
            return "500 Internal Server Error", b"metrics failed\n", "text/plain"
        return "503 Service Unavailable", b"the database is unavailable\n", "text/plain"

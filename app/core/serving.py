"""How `botarmy serve` guards its doors below the app: trusted proxies, a connection cap, and
timeouts for connections that send nothing or send their headers too slowly.

uvicorn runs on httptools (its C HTTP parser) and uvloop: h11's pure-Python parsing and
asyncio's own loop were a large share of a request's CPU (bench/README.md, `compare`). uvicorn
has no header-read timeout: its keep-alive timer runs only between requests, and every byte
received cancels it, so a client that never sends a byte, or dribbles a header line every few
seconds (slowloris), keeps its connection (and a file descriptor) forever; and
`limit_concurrency` answers 503 to requests over the limit but never sheds the idle connections
that fill it. The protocol below (uvicorn's httptools one, subclassed) adds:

- a connection cap: a connection past `BOTARMY_MAX_CONNECTIONS` open ones (HTTP and WebSocket) is
  answered 503 and closed at once;
- an idle timeout: a new connection that sends nothing for `BOTARMY_KEEP_ALIVE_SECONDS` is closed,
  as uvicorn already does between requests;
- a header-read timeout: a request whose headers are not complete `BOTARMY_HEADER_TIMEOUT_SECONDS`
  after the first byte received since the last request is answered 408 and closed. The clock
  starts on any byte, not on the parser's start of a request: the parser skips blank lines
  (`\r\n`) before a request without starting one, while every byte cancels the idle timer, so a
  client sending a blank line a second kept its connection forever;
- a body-read timeout: a request whose body is not all in `BOTARMY_BODY_TIMEOUT_SECONDS` after its
  headers is answered 408 (unless its answer has begun) and closed (a body dribbled slowly).

Forwarded headers (`X-Forwarded-For`, `-Proto`) are believed only from `BOTARMY_TRUSTED_PROXIES`
(none by default: the TCP peer is the client, which the rate limit counts).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import ServerSettings


def _response(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
        b"content-length: " + str(len(text)).encode() + b"\r\n\r\n" + text
    )


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap, an idle timeout from the first moment, a
    header-read and a body-read timeout. The limits come from the server settings (`serving_options`)."""

    max_connections = 2048
    header_timeout = 10.0
    body_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(_response(b"503 Service Unavailable", b"Too many open connections; retry shortly."))
            transport.close()
            return
        # Idle from the start, as uvicorn is between requests: closed unless something comes.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        # Any byte between requests (a blank line too, which starts no request in the parser)
        # starts the header clock; uvicorn cancels the idle timer on every byte.
        if self.header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._start_header_timer()
        super().data_received(data)

    def on_message_begin(self) -> None:
        # A request's first byte (a pipelined one too): its headers have `header_timeout`.
        super().on_message_begin()
        if self.header_timer is None:
            self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()
        upgrading = self.parser.should_upgrade() and self._should_upgrade()
        if not upgrading and self.body_timer is None:
            self.body_timer = self.loop.call_later(self.body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._stop_body_timer()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        self._stop_body_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _stop_body_timer(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def _headers_timed_out(self) -> None:
        self.header_timer = None
        self._refuse(b"The request headers came too slowly.")

    def _body_timed_out(self) -> None:
        self.body_timer = None
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # the app answers already: no status line to send
        else:
            self._refuse(b"The request body came too slowly.")

    def _refuse(self, reason: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(_response(b"408 Request Timeout", reason))
            self.transport.close()


def guarded_protocol(settings: ServerSettings) -> type[GuardedHttpProtocol]:
    """The protocol class with this server's limits."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "max_connections": settings.max_connections,
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
        },
    )


def trusted_proxies(settings: ServerSettings) -> list[str]:
    return [entry.strip() for entry in settings.trusted_proxies.split(",") if entry.strip()]


def serving_options(settings: ServerSettings) -> dict[str, Any]:
    """uvicorn's options for the doors: `uvicorn.run(..., **serving_options(settings.server))`."""
    proxies = trusted_proxies(settings)
    return {
        "http": guarded_protocol(settings),
        "loop": "auto",  # uvloop where it is installed (not on Windows)
        # Forwarded headers only from the proxies named (uvicorn's default trusts 127.0.0.1).
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or [],
        "timeout_keep_alive": settings.keep_alive_seconds,
        # uvicorn's own check, one above ours (it counts the connection asking): requests on the
        # connections admitted are never turned away by it.
        "limit_concurrency": settings.max_connections + 1,
    }

"""A small client of BotArmy's HTTP API and event stream, for the command line.

Every call answers the API's JSON or raises `ClientError` with the server's own message (its
`detail`), so that the commands can print one line a person can act on. The event stream resumes
after a dropped connection with `after=<the last id received>`, as any client should.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import websockets
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

DEFAULT_URL = "http://127.0.0.1:8000"
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
MAX_RECONNECTS = 30  # failed tries in a row before giving up: about 2 minutes with the delays above
STREAM_POSITION_HEADER = "x-stream-position"  # the handshake's answer: the id the stream starts after


class ClientError(Exception):
    """What went wrong, in the server's words (or why the server could not be reached)."""


class BotArmyClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> BotArmyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            response = await self.http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach {self.base_url} ({exc.__class__.__name__}): is `botarmy serve` running?"
            ) from None
        if response.status_code >= 400:
            raise ClientError(_detail(response))
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    # -- the calls the commands make ---------------------------------------------------------

    async def projects(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await self.call(
                "GET", "/api/v1/projects", params={"limit": 100, **({"cursor": cursor} if cursor else {})}
            )
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    async def create_project(self, name: str, description: str, oversight: str) -> dict[str, Any]:
        body = {"name": name, "description": description, "oversight_level": oversight}
        project: dict[str, Any] = await self.call("POST", "/api/v1/projects", json=body)
        return project

    async def start_execution(self, project_id: str, workflow_id: str, idea: str) -> dict[str, Any]:
        body = {"project_id": project_id, "workflow_id": workflow_id, "inputs": {"idea": idea}}
        execution: dict[str, Any] = await self.call("POST", "/api/v1/executions", json=body)
        return execution

    async def execution(self, execution_id: str) -> dict[str, Any]:
        execution: dict[str, Any] = await self.call("GET", f"/api/v1/executions/{execution_id}")
        return execution

    async def project(self, project_id: str) -> dict[str, Any]:
        project: dict[str, Any] = await self.call("GET", f"/api/v1/projects/{project_id}")
        return project

    async def stop_project(self, project_id: str) -> dict[str, Any]:
        """The emergency stop: executions pause and running attempts are taken away (back to pending)."""
        stopped: dict[str, Any] = await self.call("POST", f"/api/v1/projects/{project_id}/stop")
        return stopped

    async def resume_project(self, project_id: str) -> dict[str, Any]:
        resumed: dict[str, Any] = await self.call("POST", f"/api/v1/projects/{project_id}/resume")
        return resumed

    async def steer(self, execution_id: str, action: str) -> dict[str, Any]:
        execution: dict[str, Any] = await self.call("POST", f"/api/v1/executions/{execution_id}/{action}")
        return execution

    async def pending(self, project_id: str) -> list[dict[str, Any]]:
        page = await self.call(
            "GET", f"/api/v1/hitl/project/{project_id}/requests", params={"status": "pending", "limit": 100}
        )
        items: list[dict[str, Any]] = page["items"]
        return items

    async def hitl_context(self, request_id: str) -> dict[str, Any]:
        context: dict[str, Any] = await self.call("GET", f"/api/v1/hitl/{request_id}/context")
        return context

    async def respond(
        self,
        request_id: str,
        action: str,
        *,
        comment: str | None = None,
        amended_content: Any = None,
        response: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"action": action}
        if comment:
            body["comment"] = comment
        if amended_content is not None:
            body["amended_content"] = amended_content
        if response is not None:
            body["response"] = response
        answer: dict[str, Any] = await self.call("POST", f"/api/v1/hitl/{request_id}/respond", json=body)
        return answer

    async def usage(self, project_id: str, *, until: str | None = None) -> dict[str, Any]:
        """What the project's model calls cost (`until`: those made up to an event's timestamp)."""
        params = {"until": until} if until else None
        usage: dict[str, Any] = await self.call("GET", f"/api/v1/projects/{project_id}/usage", params=params)
        return usage

    async def export_zip(self, project_id: str) -> bytes:
        data: bytes = await self.call(
            "GET", f"/api/v1/projects/{project_id}/documents/export", params={"format": "zip"}
        )
        return data

    # -- the event stream --------------------------------------------------------------------

    async def events(
        self,
        project_id: str | None,
        *,
        after: int | None = None,
        on_open: Callable[[int | None], None] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every event of a project (or, without one, of the server) from `after` on (None: from when
        the stream opens), live: a dropped connection is opened again after the last id received, so
        nothing is lost or repeated. Gives up after `MAX_RECONNECTS` failed tries in a row (about 2 min).
        `on_open` is told each time the stream opens, with the id it resumes after."""
        path = f"/ws/projects/{project_id}" if project_id else "/ws"
        ws_url = "ws" + self.base_url.removeprefix("http") + path
        last = after
        failures = 0
        while True:
            url = ws_url + (f"?after={last}" if last is not None else "")
            try:
                async with websockets.connect(
                    url, additional_headers={"Authorization": f"Bearer {self.token}"}, open_timeout=10
                ) as socket:
                    failures = 0
                    if last is None:  # live from now: "now" is where the server started this stream
                        last = _stream_position(socket.response.headers if socket.response else None)
                    if on_open is not None:
                        on_open(last)
                    async for raw in socket:
                        message = msgspec.json.decode(raw)
                        if not isinstance(message, dict):
                            continue
                        if message.get("event_type") == "heartbeat":
                            if isinstance(message.get("last_id"), int):
                                last = message["last_id"]
                            continue
                        if isinstance(message.get("id"), int):
                            last = message["id"]
                        yield message
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status < 500 and status != 429:  # refused for good (a server or proxy restarting: try again)
                    raise ClientError(f"the event stream was refused: HTTP {status}") from None
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code in (4401, 4403, 4404, 4400):
                    raise ClientError(f"the event stream was closed: {exc.rcvd.reason or exc.rcvd.code}") from None
            except (OSError, InvalidHandshake):
                pass  # not reachable just now, or cut off during the handshake: try again below
            delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
            failures += 1
            if failures > MAX_RECONNECTS:
                raise ClientError(f"lost the event stream of {self.base_url} and could not reconnect")
            await asyncio.sleep(delay)


def _stream_position(headers: Headers | None) -> int | None:
    """The id a stream starts after, from its handshake (a server that does not say: None, live)."""
    value = headers.get(STREAM_POSITION_HEADER) if headers is not None else None
    return int(value) if value is not None and value.isdigit() else None


def _detail(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and body.get("detail"):
            return f"{body['detail']} (HTTP {response.status_code})"
    return f"HTTP {response.status_code} from {response.request.url.path}"

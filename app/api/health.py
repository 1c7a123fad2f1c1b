"""Liveness, readiness and detail. Open to everyone; they reveal no configuration."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, get
from litestar.enums import ScopeType
from litestar.types import Receive, Scope, Send

from app import __version__
from app.core.headers import encoded_security_headers
from app.core.schema import Struct
from app.core.security import PUBLIC, Role, needs
from app.health.services import ComponentHealth, HealthService

SERVICE_NAME = "botarmy"


class Liveness(Struct):
    status: Literal["ok"]
    service: str
    version: str


class Readiness(Struct):
    status: Literal["ready", "unavailable"]
    failing: list[str]
    components: dict[str, ComponentHealth]


class Detailed(Struct):
    status: Literal["healthy", "degraded", "unhealthy"]
    service: str
    version: str
    components: dict[str, ComponentHealth]


class HealthZ(Struct):
    status: Literal["healthy", "degraded", "unhealthy"]
    health_percentage: float
    checks: dict[str, Literal["pass", "fail"]]


LIVENESS = Liveness(status="ok", service=SERVICE_NAME, version=__version__)
LIVENESS_PATH = "/health"


class LivenessAnswer:
    """`GET /health` answered where a request enters the app, before Litestar's stack.

    Liveness says the process serves; it needs no token, no rate limit, no route and no handler,
    and probes ask it every few seconds from every orchestrator. Through the whole stack (metrics,
    rate limit, authentication, guard, routing, encoding) it cost 0.21 ms of CPU against the bare
    limit app's 0.07 ms (bench/README.md, `compare`). The same body and headers as the route
    below, which stays for the OpenAPI document; metrics do not count probes.
    """

    def __init__(self) -> None:
        body = msgspec.json.encode(LIVENESS)
        self.start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *encoded_security_headers(),
            ],
        }
        self.body = {"type": "http.response.body", "body": body}

    @staticmethod
    def asks(scope: Scope) -> bool:
        return scope["type"] == ScopeType.HTTP and scope["path"] == LIVENESS_PATH and scope["method"] == "GET"

    async def __call__(self, _scope: Scope, _receive: Receive, send: Send) -> None:
        await send(self.start)  # type: ignore[arg-type]
        await send(self.body)  # type: ignore[arg-type]


def _health_service(request: Request[Any, Any, Any]) -> HealthService:
    health: HealthService = request.app.state.health
    return health


def _overall(components: list[ComponentHealth]) -> Literal["healthy", "degraded", "unhealthy"]:
    if any(not c.healthy and c.critical for c in components):
        return "unhealthy"
    return "degraded" if any(not c.healthy for c in components) else "healthy"


class HealthController(Controller):
    path = "/health"
    tags = ["health"]
    opt = needs(Role.VIEWER)  # the detailed views name backends; liveness and readiness are open

    @get("/", operation_id="Liveness", opt=PUBLIC)
    async def liveness(self) -> Liveness:
        return LIVENESS  # answered by `LivenessAnswer` when served; this route documents it

    @get("/ready", operation_id="Readiness", opt=PUBLIC)
    async def readiness(self, request: Request[Any, Any, Any]) -> Response[Readiness]:
        components = await _health_service(request).check_ready()
        failing = [c.name for c in components if not c.healthy]
        body = Readiness(
            status="unavailable" if failing else "ready",
            failing=failing,
            components={c.name: c for c in components},
        )
        return Response(body, status_code=503 if failing else 200)

    @get("/detailed", operation_id="HealthDetailed")
    async def detailed(self, request: Request[Any, Any, Any]) -> Detailed:
        components = await _health_service(request).check_all()
        return Detailed(
            status=_overall(components),
            service=SERVICE_NAME,
            version=__version__,
            components={c.name: c for c in components},
        )

    @get("/z", operation_id="HealthZ")
    async def healthz(self, request: Request[Any, Any, Any]) -> HealthZ:
        components = await _health_service(request).check_all()
        passed = sum(1 for c in components if c.healthy)
        return HealthZ(
            status=_overall(components),
            health_percentage=round(100 * passed / len(components), 1),
            checks={c.name: "pass" if c.healthy else "fail" for c in components},
        )

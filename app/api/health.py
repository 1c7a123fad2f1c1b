"""Liveness, readiness and detail. Open to everyone; they reveal no configuration."""

from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, Request, Response, get

from app import __version__
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
        return Liveness(status="ok", service=SERVICE_NAME, version=__version__)

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

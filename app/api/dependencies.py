"""What every handler may ask for by name, besides `principal` and `db_session`: the process's runtime
(settings, broker, publisher, sessions) and its settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from litestar.di import Provide
from litestar.params import Dependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.core.runtime import Runtime


def provide_value(value: Any) -> Provide:
    """A dependency that is the same object on every request of one app: `value`, built with it.

    Its provider takes no parameter. One taking `state` reads the app's state from the connection
    and converts it into a new `State` on every request (Litestar's signature model): 3 % of a
    status read's CPU, for the runtime alone."""

    def provide() -> Any:
        return value

    provide.__annotations__ = {"return": type(value)}
    return Provide(provide, sync_to_thread=False)


# Handlers take them as `runtime: RuntimeDependency` and `app_settings: SettingsDependency`:
# already-built objects, not input to validate
# (msgspec would try to convert them field by field on every request).
RuntimeDependency = Annotated[Runtime, Dependency(skip_validation=True)]
SettingsDependency = Annotated[Settings, Dependency(skip_validation=True)]
SessionDependency = Annotated[AsyncSession, Dependency(skip_validation=True)]

ServiceT = TypeVar("ServiceT")


def service_provider(service_class: Callable[..., ServiceT]) -> Provide:
    """A service on the request's session (`db_session`, closed by the session's own before-send
    handler). Not advanced-alchemy's `create_service_provider`: its async generator, context manager
    and cleanup group per request cost a read 4 % of its CPU for the same object."""

    def provide(db_session: AsyncSession) -> Any:
        return service_class(session=db_session)

    provide.__annotations__ = {"db_session": SessionDependency, "return": service_class}
    return Provide(provide, sync_to_thread=False)

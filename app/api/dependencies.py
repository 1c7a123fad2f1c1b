"""What every handler may ask for by name, besides `principal` and `db_session`: the process's runtime
(settings, broker, publisher, sessions) and its settings."""

from __future__ import annotations

from typing import Annotated

from litestar.datastructures import State
from litestar.params import Dependency

from app.config import Settings
from app.core.runtime import Runtime


def provide_runtime(state: State) -> Runtime:
    runtime: Runtime = state.runtime
    return runtime


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


# Handlers take them as `runtime: RuntimeDependency` and `app_settings: SettingsDependency`:
# already-built objects, not input to validate
# (msgspec would try to convert them field by field on every request).
RuntimeDependency = Annotated[Runtime, Dependency(skip_validation=True)]
SettingsDependency = Annotated[Settings, Dependency(skip_validation=True)]

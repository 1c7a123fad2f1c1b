"""Settings come from the environment; a wrong one stops start-up with one line naming it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.config import SettingsError, load_settings
from tests.helpers import BOTARMY, REPO_ROOT


def test_defaults_are_the_embedded_mode(tmp_path: Path) -> None:
    settings = load_settings({"BOTARMY_DATA_DIR": str(tmp_path)})
    assert settings.db.is_sqlite
    assert settings.db.url == f"sqlite+aiosqlite:///{tmp_path / 'botarmy.db'}"
    assert settings.db.sqlite_file == str(tmp_path / "botarmy.db")
    assert not settings.redis.enabled
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8000)


def test_services_urls_are_normalised() -> None:
    settings = load_settings({"DATABASE_URL": "postgres://u@db:5432/botarmy", "REDIS_URL": "redis://r:6379/1"})
    assert settings.db.url == "postgresql+asyncpg://u@db:5432/botarmy"
    assert settings.redis.enabled


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("BOTARMY_PORT", "eighty", "Expected `int`"),
        ("BOTARMY_PORT", "70000", "<= 65535"),
        ("BOTARMY_LOG_LEVEL", "LOUD", "Invalid enum value"),
        ("BOTARMY_TASK_LEASE_SECONDS", "0", ">= 1"),
        ("BOTARMY_GC_YOUNG_THRESHOLD", "10", ">= 100"),
        ("DATABASE_URL", "mysql://x/y", "unsupported scheme"),
        ("DATABASE_URL", "sqlite://relative.db", "needs a path"),
        ("REDIS_URL", "http://localhost", "expected redis://"),
        ("BOTARMY_REDIS_NAMESPACE", "has spaces", "matching regex"),
    ],
)
def test_invalid_setting_names_the_variable_and_why(variable: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}=")
    assert reason in message
    assert "\n" not in message


def test_serve_refuses_to_start_on_a_bad_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [*BOTARMY, "serve"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "BOTARMY_DATA_DIR": str(tmp_path), "BOTARMY_PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["botarmy: BOTARMY_PORT='eighty' is invalid: Expected `int`, got `str`"]
    assert not (tmp_path / "botarmy.db").exists()

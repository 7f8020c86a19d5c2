"""Settings from the environment and .env; the database URL contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings, load_settings, sqlite_path
from bot.errors import ConfigError


def test_defaults_run_offline_with_sqlite() -> None:
    settings = load_settings(env_file=None)
    assert settings.preview
    assert settings.image_api_base_url == "https://api.compilelabs.com/v1"
    assert settings.default_model == "black-forest-labs/flux-1-schnell"
    assert settings.max_prompt_length == 4000
    assert sqlite_path(settings.database_url) == "data/imagine.db"


def test_env_file_and_blank_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / ".env"
    env.write_text("IMAGE_API_KEY=sk-test-123\nMODELS_FILE=\nDEFAULT_IMAGES_PER_DAY=25\n")
    settings = load_settings(env_file=str(env))
    assert not settings.preview
    assert settings.image_api_key is not None
    assert settings.image_api_key.get_secret_value() == "sk-test-123"
    assert "sk-test-123" not in repr(settings) and "sk-test-123" not in str(settings)
    assert settings.models_file is None
    assert settings.default_images_per_day == 25

    monkeypatch.setenv("IMAGE_API_KEY", "")
    assert load_settings(env_file=None).preview


def test_invalid_values_are_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_PROMPT_LENGTH", "lots")
    with pytest.raises(ConfigError, match="MAX_PROMPT_LENGTH"):
        load_settings(env_file=None)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///data/imagine.db", "data/imagine.db"),
        ("sqlite:////var/lib/imagine.db", "/var/lib/imagine.db"),
        ("sqlite://:memory:", ":memory:"),
    ],
)
def test_sqlite_path(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize("url", ["postgresql://db/imagine", "sqlite://", "sqlite:///"])
def test_unsupported_database_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        sqlite_path(url)


def test_settings_can_be_built_explicitly() -> None:
    settings = Settings(image_api_key="k", default_images_per_day=3)  # type: ignore[arg-type]
    assert not settings.preview and settings.default_images_per_day == 3

"""Core settings, read once from the environment and ``.env`` in ``__main__``.

Adapter tokens live with their adapters (``adapters/*/config.py``); this module holds what the
core needs. Tests build ``Settings(...)`` explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError

__all__ = ["Settings", "load_settings", "sqlite_path"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    image_api_base_url: str = "https://api.compilelabs.com/v1"
    image_api_key: SecretStr | None = None
    image_api_timeout: float = Field(default=120.0, gt=0)
    image_api_max_retries: int = Field(default=3, ge=0, le=10)
    # The longest Retry-After the bot sits through: the client retries within it, and the
    # queue holds new starts for at most as long; a longer one fails the job that got it.
    image_api_max_retry_wait: float = Field(default=20.0, gt=0, le=300)
    image_max_download_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    image_api_allow_private_urls: bool = False
    default_model: str = "black-forest-labs/flux-1-schnell"
    models_file: Path | None = None
    max_prompt_length: int = Field(default=4000, ge=1)
    database_url: str = "sqlite:///data/imagine.db"
    job_timeout: float = Field(default=900.0, gt=0)
    max_concurrent_jobs: int = Field(default=4, ge=1)
    max_jobs_per_user: int = Field(default=2, ge=1)
    # Jobs one server (workspace) may have queued or running; unset: no cap but the queue's.
    max_jobs_per_server: int | None = Field(default=None, ge=1)
    max_queued_jobs: int = Field(default=100, ge=0)
    shutdown_grace: float = Field(default=30.0, ge=0)
    # A second click on the same button of the same result by the same member within this
    # many seconds is not a second job.
    click_debounce: float = Field(default=5.0, ge=0, le=3600)
    default_images_per_day: int | None = Field(default=None, ge=0)
    default_images_per_month: int | None = Field(default=None, ge=0)
    default_usd_per_month: float | None = Field(default=None, ge=0)
    http_port: int | None = Field(default=None, ge=0, le=65535)
    # Loopback unless asked: /metrics tells anyone who can reach it how busy the bot is.
    http_host: str = Field(default="127.0.0.1", min_length=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    moderation_api_base_url: str | None = None
    moderation_api_key: SecretStr | None = None
    moderation_model: str = "omni-moderation-latest"
    moderation_fail_policy: Literal["refuse", "allow"] = "refuse"

    @field_validator(
        "image_api_key",
        "models_file",
        "http_port",
        "max_jobs_per_server",
        "default_images_per_day",
        "default_images_per_month",
        "default_usd_per_month",
        "moderation_api_base_url",
        "moderation_api_key",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `.env.example` copies leave `IMAGE_API_KEY=`; an empty value means "not set".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("image_api_allow_private_urls", mode="before")
    @classmethod
    def _blank_is_false(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return False
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_name(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or "text"
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name(cls, value: object) -> object:
        # Checked here: logging would only fail later, with a traceback, on an unknown name.
        if isinstance(value, str):
            name = value.strip().upper() or "INFO"
            return "WARNING" if name == "WARN" else name
        return value

    @field_validator("moderation_fail_policy", mode="before")
    @classmethod
    def _policy_name(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or "refuse"
        return value

    @property
    def preview(self) -> bool:
        """No API key: the offline preview provider draws placeholders at no cost."""
        return self.image_api_key is None or not self.image_api_key.get_secret_value()


def load_settings(env_file: str | None = ".env") -> Settings:
    """Settings from the environment (and ``env_file``); errors become one ``ConfigError``."""
    try:
        return Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def sqlite_path(database_url: str) -> str:
    """``sqlite:///data/x.db`` -> ``data/x.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``;
    ``sqlite://:memory:`` -> ``:memory:``."""
    prefix = "sqlite://"
    if not database_url.startswith(prefix):
        raise ConfigError(
            f"DATABASE_URL must start with sqlite:// (got a {database_url.split(':', 1)[0]} URL)"
        )
    rest = database_url[len(prefix) :]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or rest == "/":
        raise ConfigError("DATABASE_URL must look like sqlite:///relative/path.db")
    return rest[1:]

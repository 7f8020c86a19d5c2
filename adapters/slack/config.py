"""Slack settings, read from the environment and ``.env`` (the README lists them).

This module imports no Slack SDK, so ``imagine-bot run`` can read it to decide whether the
Slack adapter is configured at all. Invalid values become one ``ConfigError``.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError

__all__ = ["SlackSettings"]

log = logging.getLogger(__name__)

_SECRETS = ("slack_bot_token", "slack_app_token", "slack_signing_secret")


class SlackSettings(BaseSettings):
    """``SLACK_BOT_TOKEN`` plus ``SLACK_APP_TOKEN`` runs Socket Mode; ``SLACK_BOT_TOKEN`` plus
    ``SLACK_SIGNING_SECRET`` (and no app token) runs HTTP mode on ``HTTP_PORT``."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_base_url: str = "https://slack.com/api/"
    slack_admin_user_ids: str = ""
    http_port: int | None = Field(default=None, ge=0, le=65535)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid Slack configuration: {problems}") from None

    @field_validator(*_SECRETS, "http_port", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `.env.example` copies leave `SLACK_APP_TOKEN=`; an empty value means "not set".
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str):
            return value.strip()
        return value

    @model_validator(mode="after")
    def _check(self) -> SlackSettings:
        bot = _secret(self.slack_bot_token)
        app = _secret(self.slack_app_token)
        if bot and not bot.startswith("xoxb-"):
            hint = " (that looks like the app-level token)" if bot.startswith("xapp-") else ""
            raise ConfigError(f"SLACK_BOT_TOKEN must be a bot token starting with xoxb-{hint}")
        if app and not app.startswith("xapp-"):
            hint = " (that looks like the bot token)" if app.startswith("xoxb-") else ""
            raise ConfigError(
                f"SLACK_APP_TOKEN must be an app-level token starting with xapp-{hint}; "
                "create one under Basic Information > App-Level Tokens with connections:write"
            )
        if self.enabled and self.mode == "http" and self.http_port is None:
            raise ConfigError(
                "Slack HTTP mode (SLACK_SIGNING_SECRET without SLACK_APP_TOKEN) needs HTTP_PORT, "
                "the port Slack's requests reach at /slack/events; or set SLACK_APP_TOKEN to use "
                "Socket Mode, which needs no public URL"
            )
        return self

    @property
    def enabled(self) -> bool:
        """A bot token plus either an app token (Socket Mode) or a signing secret (HTTP)."""
        return bool(_secret(self.slack_bot_token)) and bool(
            _secret(self.slack_app_token) or _secret(self.slack_signing_secret)
        )

    @property
    def mode(self) -> Literal["socket", "http"]:
        return "socket" if _secret(self.slack_app_token) else "http"

    @property
    def admin_user_ids(self) -> frozenset[str]:
        """``SLACK_ADMIN_USER_IDS``: a comma (or space) separated list of user ids (``U456``,
        for the token's own workspace) or workspace-qualified ids (``T123:U456``)."""
        return frozenset(self.slack_admin_user_ids.replace(",", " ").split())

    @property
    def api_base_url(self) -> str:
        url = self.slack_api_base_url.strip() or "https://slack.com/api/"
        return url if url.endswith("/") else url + "/"


def _secret(value: SecretStr | None) -> str:
    return "" if value is None else value.get_secret_value()

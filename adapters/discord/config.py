"""The Discord adapter's settings, read from the environment and ``.env``.

This module imports no part of discord.py, so ``imagine-bot run`` can decide whether the
adapter is wanted without loading the SDK.
"""

from __future__ import annotations

import logging
from typing import Annotated

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError

__all__ = ["DEFAULT_API_BASE_URL", "DEFAULT_GATEWAY_URL", "DiscordSettings"]

log = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = "https://discord.com/api/v10"
DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg/"


class DiscordSettings(BaseSettings):
    """``DISCORD_TOKEN`` enables the adapter. ``DISCORD_GUILD_IDS`` (comma list) syncs the
    commands to those servers at start-up (instant) instead of globally. The two URLs point
    discord.py at another REST base and gateway (proxies, the test suite's fake Discord).

    ``DISCORD_SHARD_COUNT`` is the total number of shards across every process and
    ``DISCORD_SHARD_IDS`` the ones this process runs (all of them when unset); with neither,
    Discord's recommended count is asked for at start-up and every shard runs here."""

    model_config = SettingsConfigDict(
        env_prefix="DISCORD_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    token: SecretStr | None = None
    guild_ids: Annotated[tuple[int, ...], NoDecode] = ()
    api_base_url: str = DEFAULT_API_BASE_URL
    gateway_url: str = DEFAULT_GATEWAY_URL
    shard_count: int | None = None
    shard_ids: Annotated[tuple[int, ...], NoDecode] = ()

    @field_validator("token", mode="before")
    @classmethod
    def _blank_token_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("guild_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part.strip() for part in value.replace(";", ",").split(",")]
            ids = []
            for part in parts:
                if not part:
                    continue
                if not part.isdigit():
                    # Not a ValueError: pydantic lets it through, and the CLI prints it as one line.
                    raise ConfigError(
                        f"DISCORD_GUILD_IDS: {part!r} is not a server id; give numbers separated "
                        "by commas (right-click the server with Developer Mode on, Copy Server ID)"
                    )
                ids.append(int(part))
            return tuple(ids)
        if isinstance(value, int):
            return (value,)
        return value

    @field_validator("shard_count", mode="before")
    @classmethod
    def _check_shard_count(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            if not text.isdigit() or int(text) < 1:
                raise ConfigError(
                    f"DISCORD_SHARD_COUNT: {text!r} is not a number of shards; give a whole "
                    "number of 1 or more (the total across all processes), or leave it unset "
                    "to let Discord choose"
                )
            return int(text)
        return value

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _split_shard_ids(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        ids: list[int] = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            if not part.isdigit():
                raise ConfigError(
                    f"DISCORD_SHARD_IDS: {part!r} is not a shard id; give the shards this "
                    "process runs as numbers separated by commas, e.g. 0,1"
                )
            if int(part) in ids:
                raise ConfigError(f"DISCORD_SHARD_IDS: shard {part} is listed twice")
            ids.append(int(part))
        return tuple(ids)

    @model_validator(mode="after")
    def _shards_fit_the_count(self) -> DiscordSettings:
        if not self.shard_ids:
            return self
        count = self.shard_count
        if count is None:
            raise ConfigError(
                "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT: set it to the total number of "
                "shards across all processes"
            )
        for shard_id in self.shard_ids:
            if shard_id >= count:
                raise ConfigError(
                    f"DISCORD_SHARD_IDS: shard {shard_id} does not exist with "
                    f"DISCORD_SHARD_COUNT={count} (shard ids go from 0 to {count - 1})"
                )
        return self

    @field_validator("api_base_url", mode="before")
    @classmethod
    def _clean_api_base_url(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().rstrip("/") or DEFAULT_API_BASE_URL
        return value

    @field_validator("gateway_url", mode="before")
    @classmethod
    def _clean_gateway_url(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip() or DEFAULT_GATEWAY_URL
        return value

    @property
    def own_shards(self) -> list[int] | None:
        """The shards this process runs, or ``None`` before the count is known (automatic)."""
        if self.shard_ids:
            return list(self.shard_ids)
        if self.shard_count is not None:
            return list(range(self.shard_count))
        return None

    @property
    def enabled(self) -> bool:
        return self.token is not None and bool(self.token.get_secret_value().strip())

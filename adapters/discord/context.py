"""What the Discord features need from the client, as a protocol: commands, buttons and
replies depend on this, not on ``ImagineClient`` (the one implementation, which wires the
features together), so that no feature module imports the client or another feature's
caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, cast

import discord

if TYPE_CHECKING:
    from adapters.discord.config import DiscordSettings
    from adapters.runtime import Runtime

__all__ = ["ButtonAction", "DiscordContext", "context_of"]


class DiscordContext(Protocol):
    runtime: Runtime
    settings: DiscordSettings

    def get_partial_messageable(
        self, id: int, *, guild_id: int | None = None
    ) -> discord.PartialMessageable: ...

    async def report_unexpected(
        self, interaction: discord.Interaction, error: BaseException
    ) -> None:
        """The one error hook, shared by the slash commands and the buttons."""

    def button_action(self, name: str) -> ButtonAction:
        """What a click on the button named ``name`` (``<prefix>:<action>``) does."""


# A button's click: the context, the interaction and the id the custom id carries (a job or a
# review).
ButtonAction = Callable[[DiscordContext, discord.Interaction, str], Awaitable[None]]


def context_of(interaction: discord.Interaction) -> DiscordContext:
    """The client an interaction came through; it is always an ``ImagineClient``."""
    return cast("DiscordContext", interaction.client)

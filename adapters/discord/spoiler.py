"""Spoilers: a server's moderation rules can post its images as spoilers outside channels
Discord marks age-restricted."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from adapters.discord.render import PLATFORM

if TYPE_CHECKING:
    from adapters.runtime import Runtime

__all__ = ["is_nsfw", "spoiler_for", "spoiler_wanted"]


def is_nsfw(channel: object) -> bool:
    """Whether Discord marks ``channel`` age-restricted; unknown channels count as not."""
    check = getattr(channel, "is_nsfw", None)
    if callable(check):
        return bool(check())
    return bool(getattr(channel, "nsfw", False))


async def spoiler_wanted(runtime: Runtime, workspace_id: str, channel: object) -> bool:
    """The server posts images as spoilers, and ``channel`` is not marked NSFW."""
    return await runtime.moderation.spoilers(
        PLATFORM, workspace_id, age_restricted=is_nsfw(channel)
    )


async def spoiler_for(interaction: discord.Interaction) -> bool:
    """``spoiler_wanted`` for the channel an interaction came from."""
    runtime: Runtime | None = getattr(interaction.client, "runtime", None)
    if runtime is None:
        return False
    return await spoiler_wanted(runtime, str(interaction.guild_id or ""), interaction.channel)

"""``/imagine-admin`` moderation subcommands: ``block add|remove|list``, ``review-channel``,
``channels allow|remove|list``, ``spoilers on|off`` and ``moderation-log``.

They join the existing group (adapters/discord/admin.py), so Discord hides them from members
without Manage Server; ``ModerationAdmin`` checks ``Requester.is_admin`` again on the server
side. Every answer is ephemeral. No ``from __future__ import annotations``: discord.py reads
the parameter annotations (see commands.py).
"""

import logging
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands

from adapters.discord.context import DiscordContext
from adapters.discord.reply import answer_admin
from bot.messages import (
    block_added_text,
    block_list_text,
    block_removed_text,
    channel_allowed_text,
    channel_disallowed_text,
    channels_list_text,
    moderation_log_text,
    review_channel_text,
    spoilers_text,
)
from bot.models import Requester

__all__ = ["add_moderation_commands"]

log = logging.getLogger(__name__)


Action = Callable[[Requester], Awaitable[str]]


def _channel(channel_id: str) -> str:
    return f"<#{channel_id}>"


async def _answer(interaction: discord.Interaction, action: Action) -> None:
    async def with_no_file(actor: Requester) -> tuple[str, discord.File | None]:
        return await action(actor), None

    await answer_admin(interaction, with_no_file, overflow_name="imagine-moderation.txt")


def add_moderation_commands(group: app_commands.Group, context: DiscordContext) -> None:
    """Add the moderation subcommands and subgroups to ``/imagine-admin``."""
    admin = context.runtime.moderation_admin

    block = app_commands.Group(name="block", description="Words and patterns refused in prompts")

    @block.command(name="add", description="Refuse prompts with this word, phrase or /regex/")
    @app_commands.describe(term="A word or phrase, or a regular expression written as /regex/")
    async def block_add(
        interaction: discord.Interaction, term: app_commands.Range[str, 1, 200]
    ) -> None:
        async def action(actor: Requester) -> str:
            change = await admin.block(actor, term)
            return block_added_text(change.value, pattern=change.pattern, added=change.changed)

        await _answer(interaction, action)

    @block.command(name="remove", description="Stop refusing this word, phrase or /regex/")
    @app_commands.describe(term="Exactly as it was added (see /imagine-admin block list)")
    async def block_remove(
        interaction: discord.Interaction, term: app_commands.Range[str, 1, 200]
    ) -> None:
        async def action(actor: Requester) -> str:
            change = await admin.unblock(actor, term)
            return block_removed_text(change.value, pattern=change.pattern, removed=change.changed)

        await _answer(interaction, action)

    @block.command(name="list", description="This server's blocked words and patterns")
    async def block_list(interaction: discord.Interaction) -> None:
        async def action(actor: Requester) -> str:
            return block_list_text(await admin.block_list(actor))

        await _answer(interaction, action)

    channels = app_commands.Group(name="channels", description="Where /imagine may be used")

    @channels.command(name="allow", description="Allow /imagine in this channel (a list)")
    @app_commands.describe(channel="Once any channel is allowed, /imagine works only there")
    async def channels_allow(
        interaction: discord.Interaction, channel: app_commands.AppCommandChannel
    ) -> None:
        async def action(actor: Requester) -> str:
            added = await admin.allow_channel(actor, str(channel.id))
            return channel_allowed_text(_channel(str(channel.id)), added=added)

        await _answer(interaction, action)

    @channels.command(name="remove", description="Take a channel off the allowed list")
    @app_commands.describe(channel="The channel to remove; an empty list allows every channel")
    async def channels_remove(
        interaction: discord.Interaction, channel: app_commands.AppCommandChannel
    ) -> None:
        async def action(actor: Requester) -> str:
            removed = await admin.disallow_channel(actor, str(channel.id))
            return channel_disallowed_text(_channel(str(channel.id)), removed=removed)

        await _answer(interaction, action)

    @channels.command(name="list", description="The channels /imagine is allowed in")
    async def channels_list(interaction: discord.Interaction) -> None:
        async def action(actor: Requester) -> str:
            rules = await admin.block_list(actor)
            return channels_list_text([_channel(c) for c in rules.allowed_channel_ids])

        await _answer(interaction, action)

    @app_commands.command(
        name="review-channel", description="Where refused prompts go for review (none: clear)"
    )
    @app_commands.describe(channel="The admins' channel; leave out to stop reviews")
    async def review_channel(
        interaction: discord.Interaction, channel: app_commands.AppCommandChannel | None = None
    ) -> None:
        async def action(actor: Requester) -> str:
            channel_id = None if channel is None else str(channel.id)
            await admin.set_review_channel(actor, channel_id)
            return review_channel_text(None if channel_id is None else _channel(channel_id))

        await _answer(interaction, action)

    spoilers = app_commands.Group(
        name="spoilers", description="Post images as spoilers outside NSFW channels"
    )

    async def set_spoilers(interaction: discord.Interaction, on: bool) -> None:
        async def action(actor: Requester) -> str:
            await admin.set_spoilers(actor, on)
            return spoilers_text(on)

        await _answer(interaction, action)

    @spoilers.command(name="on", description="Every image is a spoiler outside NSFW channels")
    async def spoilers_on(interaction: discord.Interaction) -> None:
        await set_spoilers(interaction, True)

    @spoilers.command(name="off", description="Images are shown as usual")
    async def spoilers_off(interaction: discord.Interaction) -> None:
        await set_spoilers(interaction, False)

    @app_commands.command(name="moderation-log", description="Refused prompts, newest first")
    @app_commands.describe(days="How many days back, today included (default 7)")
    async def moderation_log(
        interaction: discord.Interaction, days: app_commands.Range[int, 1, 366] = 7
    ) -> None:
        async def action(actor: Requester) -> str:
            entries = await admin.log(actor, days)
            return moderation_log_text(
                entries,
                days=days,
                user_label=lambda user_id: f"<@{user_id}>",
                channel_label=_channel,
            )

        await _answer(interaction, action)

    for group_or_command in (block, channels, spoilers):
        group.add_command(group_or_command)
    group.add_command(review_channel)
    group.add_command(moderation_log)
    del block_add, block_remove, block_list, channels_allow, channels_remove, channels_list
    del spoilers_on, spoilers_off

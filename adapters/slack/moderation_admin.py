"""The moderation admin commands (``/imagine admin block ...``; grammar in
moderation_grammar.py), answered as Slack mrkdwn with user text escaped."""

from __future__ import annotations

import logging

from adapters.slack import moderation_grammar as mc
from adapters.slack.render import clip, escape
from bot.messages import (
    SPOILERS_DISCORD_ONLY,
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
from bot.moderation.admin import ModerationAdmin

__all__ = ["ModerationCommands"]

log = logging.getLogger(__name__)

_MAX_REPLY = 3900


class ModerationCommands:
    """``ModerationAdmin`` refuses non-admins (``PermissionDeniedError``)."""

    def __init__(self, admin: ModerationAdmin) -> None:
        self.admin = admin

    async def run(self, actor: Requester, command: mc.ModerationCommand) -> str:
        """Run one moderation admin command; the answer is its reply."""
        admin = self.admin
        if isinstance(command, mc.BlockAdd):
            change = await admin.block(actor, command.term)
            return escape(
                block_added_text(change.value, pattern=change.pattern, added=change.changed)
            )
        if isinstance(command, mc.BlockRemove):
            change = await admin.unblock(actor, command.term)
            return escape(
                block_removed_text(change.value, pattern=change.pattern, removed=change.changed)
            )
        if isinstance(command, mc.BlockList):
            return escape(block_list_text(await admin.block_list(actor)))
        if isinstance(command, mc.ReviewChannel):
            await admin.set_review_channel(actor, command.channel_id)
            where = None if command.channel_id is None else f"<#{command.channel_id}>"
            return review_channel_text(where)
        if isinstance(command, mc.ChannelsAllow):
            added = await admin.allow_channel(actor, command.channel_id)
            return channel_allowed_text(f"<#{command.channel_id}>", added=added)
        if isinstance(command, mc.ChannelsRemove):
            removed = await admin.disallow_channel(actor, command.channel_id)
            return channel_disallowed_text(f"<#{command.channel_id}>", removed=removed)
        if isinstance(command, mc.ChannelsList):
            rules = await admin.block_list(actor)
            return channels_list_text([f"<#{c}>" for c in rules.allowed_channel_ids])
        if isinstance(command, mc.Spoilers):
            await admin.set_spoilers(actor, command.on)
            return f"{spoilers_text(command.on)} {SPOILERS_DISCORD_ONLY}"
        if isinstance(command, mc.ModerationLog):
            entries = await admin.log(actor, command.days)
            text = moderation_log_text(
                entries,
                days=command.days,
                user_label=lambda user_id: f"<@{user_id}>",
                channel_label=lambda channel_id: f"<#{channel_id}>",
                quote=escape,
            )
            return clip(text, _MAX_REPLY)
        raise AssertionError(f"unhandled command {command!r}")

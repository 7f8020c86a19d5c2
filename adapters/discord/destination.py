"""Where a job's answer goes on Discord when the interaction object is not at hand: the
member's message, edited through the interaction's webhook token while Discord keeps it open,
else a post to the channel with the bot token mentioning the member.

Built from a job's ``reach`` (``adapters.discord.reply.reach``) in a process that never saw the
interaction (a restart notice, a job another process accepted), and by ``Reply`` itself for its
late channel posts.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.models import Requester

__all__ = ["TOKEN_GONE_CODES", "TOKEN_MARGIN", "Destination"]

log = logging.getLogger(__name__)

# Unknown Message (the loading message was deleted), Unknown Webhook, Unknown Interaction,
# Invalid Webhook Token (expired).
TOKEN_GONE_CODES = frozenset({10008, 10015, 10062, 50027})
# Uploads take time: do not start one on a token about to expire.
TOKEN_MARGIN = datetime.timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Destination:
    """The member's message (``message_id``, editable with ``app_id`` and ``token`` until
    ``expires``) and the channel it is in. ``limit`` is the interaction's upload limit in
    bytes, when it was stored."""

    user_id: str
    channel_id: int | None = None
    guild_id: int | None = None
    message_id: int | None = None
    app_id: int | None = None
    token: str = field(default="", repr=False)  # the interaction's: it edits the message
    expires: datetime.datetime | None = None
    limit: int | None = None

    @classmethod
    def of(cls, reach: Mapping[str, str], requester: Requester) -> Destination:
        """From a job's ``reach``; what it lacks comes from the job's requester."""
        expires = reach.get("expires", "")
        return cls(
            user_id=reach.get("user") or requester.user_id,
            channel_id=_number(reach.get("channel") or requester.channel_id),
            guild_id=_number(reach.get("guild") or requester.workspace_id),
            message_id=_number(reach.get("message")),
            app_id=_number(reach.get("app")),
            token=reach.get("token", ""),
            expires=datetime.datetime.fromisoformat(expires) if expires else None,
            limit=_number(reach.get("limit")),
        )

    @property
    def mention(self) -> str:
        return f"<@{self.user_id}>"

    @property
    def mentions(self) -> discord.AllowedMentions:
        """Pings only the member, whatever the text quotes."""
        return discord.AllowedMentions(
            everyone=False, roles=False, users=[discord.Object(int(self.user_id))]
        )

    def editable(self) -> bool:
        """Whether the token may still edit the member's message, with a margin for the
        upload."""
        return (
            self.message_id is not None
            and self.app_id is not None
            and bool(self.token)
            and self.expires is not None
            and discord.utils.utcnow() + TOKEN_MARGIN < self.expires
        )

    async def edit(self, client: discord.Client, **fields: Any) -> bool:
        """The member's message becomes ``fields``; False when the token can no longer do
        that (expired, or the message is gone). Discord's other refusals are raised."""
        if not self.editable():
            return False
        assert self.app_id is not None and self.message_id is not None
        webhook = discord.Webhook.partial(self.app_id, self.token, client=client)
        try:
            await webhook.edit_message(self.message_id, allowed_mentions=self.mentions, **fields)
        except discord.HTTPException as exc:
            if exc.code not in TOKEN_GONE_CODES:
                raise
            log.info("message %s can no longer be edited (%s)", self.message_id, exc.code)
            return False
        return True

    async def post(self, client: discord.Client, **fields: Any) -> bool:
        """``fields`` posted to the channel with the bot token, pinging only the member; then
        the stale message is removed if Discord still shows it. False when there is no
        channel to post to; Discord's refusals are raised."""
        if self.channel_id is None:
            log.error("no channel to post the answer for %s to", self.user_id)
            return False
        channel = client.get_partial_messageable(self.channel_id, guild_id=self.guild_id)
        try:
            await channel.send(allowed_mentions=self.mentions, **fields)
        except discord.Forbidden:
            log.error(
                "cannot post in channel %s: give the bot View Channel, Send Messages, Embed Links "
                "and Attach Files there",
                self.channel_id,
            )
            raise
        if self.message_id is not None:
            with contextlib.suppress(discord.HTTPException):
                await channel.get_partial_message(self.message_id).delete()
        return True


def _number(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None

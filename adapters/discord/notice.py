"""After a restart: the member's "thinking…" or "Queued" message becomes "This job was
interrupted by a restart; nothing was charged." with a Try again button.

The job's ``reach`` (``adapters.discord.reply.reach``) holds the interaction's webhook token,
which edits that message for 15 minutes; after that, or when the message is gone, the notice is
posted to the channel with the bot's token, mentioning the member.
"""

from __future__ import annotations

import contextlib
import datetime
import logging

import discord

from adapters.discord.button import retry_view
from adapters.discord.reply import TOKEN_GONE_CODES, TOKEN_MARGIN
from bot.messages import INTERRUPTED_NOTICE
from bot.store.ledger import Interrupted

__all__ = ["tell_interrupted"]

log = logging.getLogger(__name__)


async def tell_interrupted(client: discord.Client, notice: Interrupted) -> bool:
    reach = notice.reach
    job_id = notice.record.job_id
    user = reach.get("user") or notice.record.requester.user_id
    text = f"<@{user}> {INTERRUPTED_NOTICE}"
    mentions = discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(user)])
    message_id = int(reach["message"]) if reach.get("message", "").isdigit() else None
    expires = datetime.datetime.fromisoformat(reach["expires"]) if reach.get("expires") else None
    if message_id and expires and discord.utils.utcnow() + TOKEN_MARGIN < expires:
        webhook = discord.Webhook.partial(int(reach["app"]), reach["token"], client=client)
        try:
            await webhook.edit_message(
                message_id,
                content=text,
                embeds=[],
                attachments=[],
                view=retry_view(job_id),
                allowed_mentions=mentions,
            )
            return True
        except discord.HTTPException as exc:
            if exc.code not in TOKEN_GONE_CODES:
                raise
            log.info("job %s: its message can no longer be edited (%s)", job_id, exc.code)
    channel_id = reach.get("channel") or notice.record.requester.channel_id
    if not channel_id.isdigit():
        return False
    guild = reach.get("guild", "")
    channel = client.get_partial_messageable(
        int(channel_id), guild_id=int(guild) if guild.isdigit() else None
    )
    await channel.send(text, view=retry_view(job_id), allowed_mentions=mentions)
    if message_id:
        # The stale "thinking…" message, if Discord still shows it.
        with contextlib.suppress(discord.HTTPException):
            await channel.get_partial_message(message_id).delete()
    return True

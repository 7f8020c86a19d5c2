"""After a restart: the member's "thinking…" or "Queued" message becomes "This job was
interrupted by a restart; nothing was charged." with a Try again button.

The job's ``reach`` (``adapters.discord.reply.reach``) holds the interaction's webhook token,
which edits that message for 15 minutes; after that, or when the message is gone, the notice is
posted to the channel with the bot's token, mentioning the member (``Destination``).
"""

from __future__ import annotations

import discord

from adapters.discord.button import retry_view
from adapters.discord.destination import Destination
from bot.messages import INTERRUPTED_NOTICE
from bot.store.ledger import Interrupted

__all__ = ["tell_interrupted"]


async def tell_interrupted(client: discord.Client, notice: Interrupted) -> bool:
    destination = Destination.of(notice.reach, notice.record.requester)
    job_id = notice.record.job_id
    text = f"{destination.mention} {INTERRUPTED_NOTICE}"
    if await destination.edit(
        client, content=text, embeds=[], attachments=[], view=retry_view(job_id)
    ):
        return True
    return await destination.post(client, content=text, view=retry_view(job_id))

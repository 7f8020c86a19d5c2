"""A queued job's loading message on Discord: its place in the queue, an ETA and a Cancel
button, then "Generating…" once it runs.

The Cancel button (``adapters.discord.button``) carries the job id, so a click is understood
after a restart too (the queue itself does not survive one, so such a click is told the job
is no longer waiting). Edits go through the interaction's webhook, which Discord
rate-limits: ``StatusFeed`` throttles them and never holds the job up.
"""

from __future__ import annotations

import logging

import discord

from adapters.discord.button import cancel_view
from adapters.discord.context import DiscordContext
from adapters.discord.render import to_requester
from adapters.discord.reply import TOKEN_GONE_CODES, Reply
from adapters.progress import StatusFeed
from bot.errors import BotError, JobCancelledError
from bot.messages import CANCEL_CONFIRMED, cancel_refused_text, describe, queue_text
from bot.models import QueueStatus

__all__ = ["QueueNote", "cancel"]

log = logging.getLogger(__name__)


class QueueNote:
    """What one job's loading message shows while the job waits and once it runs. ``feed`` is
    the ``progress`` callback for ``ImageService.generate``; ``close`` before answering."""

    def __init__(self, reply: Reply, *, running_text: str) -> None:
        self.reply = reply
        self.running_text = running_text
        self.feed = StatusFeed(self._show)

    async def _show(self, status: QueueStatus) -> None:
        if status.running:
            await self.reply.show_progress(self.running_text)
        else:
            await self.reply.show_progress(queue_text(status), view=cancel_view(status.job_id))

    async def close(self) -> None:
        await self.feed.close()

    async def cancelled(self, err: JobCancelledError) -> None:
        """The job's own message says it was cancelled (and the Cancel button goes). If the
        interaction can no longer edit it, the requester is told the usual way."""
        reply = self.reply
        if reply.token_usable():
            try:
                await reply.interaction.edit_original_response(
                    content=describe(err), embeds=[], view=None
                )
                return
            except discord.HTTPException as exc:
                if exc.code not in TOKEN_GONE_CODES:
                    raise
        await reply.fail(err)


async def cancel(context: DiscordContext, interaction: discord.Interaction, job_id: str) -> None:
    """The requester or an admin takes a queued job out of the queue; the job's own message
    then says so. The clicker gets a private answer either way."""
    reply = Reply(interaction, ephemeral=True)
    if not await reply.defer():
        return
    requester = to_requester(interaction)
    try:
        await context.runtime.service.cancel(job_id, requester)
    except BotError as err:
        log.info("job %s: cancel by %s refused: %s", job_id, requester.user_id, type(err).__name__)
        await reply.say(cancel_refused_text(err))
        return
    log.info("job %s: cancelled by %s", job_id, requester.user_id)
    await reply.say(CANCEL_CONFIRMED)

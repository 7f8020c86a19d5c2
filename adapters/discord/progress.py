"""A queued job's loading message on Discord: its place in the queue, an ETA and a Cancel
button, then "Generating…" once it runs.

The Cancel button is a ``DynamicItem`` whose custom id is ``imagine:cancel:<job id>``, so a
click is understood after a restart too (the queue itself does not survive one, so such a
click is told the job is no longer waiting). Edits go through the interaction's webhook,
which Discord rate-limits: ``StatusFeed`` throttles them and never holds the job up.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, cast

import discord

from adapters.discord.render import accepting, to_requester
from adapters.discord.reply import TOKEN_GONE_CODES, Reply
from adapters.progress import StatusFeed
from bot.errors import BotError, JobCancelledError
from bot.messages import BUTTON_LABELS, CANCEL_CONFIRMED, cancel_refused_text, describe, queue_text
from bot.models import QueueStatus

if TYPE_CHECKING:
    from adapters.discord.client import ImagineClient

__all__ = ["CANCEL_ID", "CancelButton", "QueueFeedback", "cancel_custom_id", "cancel_view"]

log = logging.getLogger(__name__)

CANCEL_ID = re.compile(r"imagine:cancel:(?P<job_id>[\w-]{1,80})")


def cancel_custom_id(job_id: str) -> str:
    value = f"imagine:cancel:{job_id}"
    if not CANCEL_ID.fullmatch(value):
        raise ValueError(f"job id {job_id!r} cannot go into a custom id")
    return value


def cancel_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


class QueueFeedback:
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


class CancelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CANCEL_ID):
    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=BUTTON_LABELS["cancel"],
                style=discord.ButtonStyle.danger,
                emoji="✖️",
                custom_id=cancel_custom_id(job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> CancelButton:
        return cls(match["job_id"])

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return accepting(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        client = cast("ImagineClient", interaction.client)
        try:
            await _cancel(client, interaction, self.job_id)
        except Exception as exc:
            await client.tree.report_unexpected(interaction, exc)


async def _cancel(client: ImagineClient, interaction: discord.Interaction, job_id: str) -> None:
    """The requester or an admin takes a queued job out of the queue; the job's own message
    then says so. The clicker gets a private answer either way."""
    reply = Reply(interaction, ephemeral=True)
    if not await reply.defer():
        return
    requester = to_requester(interaction)
    try:
        await client.runtime.service.cancel(job_id, requester)
    except BotError as err:
        log.info("job %s: cancel by %s refused: %s", job_id, requester.user_id, type(err).__name__)
        await reply.say(cancel_refused_text(err))
        return
    log.info("job %s: cancelled by %s", job_id, requester.user_id)
    await reply.say(CANCEL_CONFIRMED)

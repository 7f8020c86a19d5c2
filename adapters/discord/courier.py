"""Answering on Discord about a job another bot process accepted (``bot.courier``).

This process never saw the member's interaction, only the job's ``reach``: the result is the
message a normal delivery posts (``Reply.deliver``), put into the member's "thinking…" /
"Queued" message through the interaction's webhook token while Discord keeps it open, else
posted to the channel with the bot token, mentioning the member (``Destination``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import discord

from adapters.discord.button import result_view
from adapters.discord.destination import Destination
from adapters.discord.render import fitted, image_files, result_embed
from adapters.discord.reply import channel_mention, late_text
from adapters.discord.spoiler import spoiler_wanted
from bot.errors import BotError, DeliveryError
from bot.messages import DELIVERY_FAILED, describe
from bot.models import GenerationResult, JobRecord

if TYPE_CHECKING:
    from adapters.runtime import Runtime

__all__ = ["DiscordCourier"]

log = logging.getLogger(__name__)


class DiscordCourier:
    """``client`` is logged in (REST is all it needs; with the gateway, the server's channels
    are known, for the spoiler rule); ``runtime`` gives the refitter and the moderation
    rules."""

    def __init__(self, client: discord.Client, runtime: Runtime) -> None:
        self.client = client
        self.runtime = runtime

    async def deliver(
        self, record: JobRecord, reach: Mapping[str, str], result: GenerationResult
    ) -> None:
        """The images fitted to the interaction's upload limit, the embed and the buttons, in
        one message. When Discord refuses it, the member is told and ``DeliveryError`` raised,
        so the job is refunded."""
        destination = Destination.of(reach, record.requester)
        limit = destination.limit or self._guild_limit(destination.guild_id)
        async with fitted(result, limit, self.runtime.refitter) as images:
            spoiler = await self._spoiler(record, destination)
            embed = result_embed(result)
            try:
                if await destination.edit(
                    self.client,
                    content=None,
                    embed=embed,
                    attachments=image_files(result, images, spoiler=spoiler),
                    view=result_view(result.job_id),
                ):
                    return
                log.info(
                    "job %s: its message cannot be edited; posting to the channel", record.job_id
                )
                posted = await destination.post(
                    self.client,
                    content=late_text(destination.user_id),
                    embed=embed,
                    files=image_files(result, images, spoiler=spoiler),
                    view=result_view(result.job_id),
                )
                if not posted:
                    raise DeliveryError("no channel to post the result to", job_id=result.job_id)
            except discord.HTTPException as exc:
                log.error(
                    "job %s: Discord refused the result: %s %s %s",
                    result.job_id,
                    exc.status,
                    exc.code,
                    exc.text,
                )
                told = await self._tell_quietly(destination, DELIVERY_FAILED)
                raise DeliveryError(
                    f"Discord refused the result: {exc.status}", notified=told, job_id=result.job_id
                ) from exc

    async def fail(self, record: JobRecord, reach: Mapping[str, str], error: BotError) -> None:
        """The member's message becomes the error's text, or it is posted to the channel
        mentioning them. Nothing when they were told already (``notified``); when Discord
        refuses both, only the log has it."""
        if error.notified:
            return
        text = describe(error, channel_label=channel_mention)
        if not await self._tell_quietly(Destination.of(reach, record.requester), text):
            log.warning("job %s: could not tell its member that it failed", record.job_id)

    async def _tell(self, destination: Destination, text: str) -> bool:
        if await destination.edit(self.client, content=text, embeds=[], attachments=[], view=None):
            return True
        return await destination.post(self.client, content=f"{destination.mention} {text}")

    async def _tell_quietly(self, destination: Destination, text: str) -> bool:
        with contextlib.suppress(discord.HTTPException):
            return await self._tell(destination, text)
        return False

    async def _spoiler(self, record: JobRecord, destination: Destination) -> bool:
        channel = None
        if destination.channel_id is not None:
            channel = self.client.get_channel(destination.channel_id)
        return await spoiler_wanted(self.runtime, record.requester.workspace_id, channel)

    def _guild_limit(self, guild_id: int | None) -> int:
        """The server's upload limit (its boost level), for a reach stored without one."""
        guild = self.client.get_guild(guild_id) if guild_id is not None else None
        return (
            guild.filesize_limit
            if guild is not None
            else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
        )

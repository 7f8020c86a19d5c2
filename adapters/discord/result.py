"""What the buttons under a result do: Reroll and Variations (new seeds), Try again (under a
job a restart interrupted), Details and Delete. Each works from the job id alone (the
parameters come from the ledger), so it works on any message the bot ever sent."""

from __future__ import annotations

import functools
import logging

import discord

from adapters.discord.context import DiscordContext
from adapters.discord.job import JobStarter, run_job
from adapters.discord.render import details_embed, to_requester
from adapters.discord.reply import Reply, acknowledge
from bot.access import may_act_on
from bot.errors import BotError, JobNotFoundError, UnknownModelError
from bot.messages import ALREADY_WORKING, DELETE_NOT_ALLOWED
from bot.service import VARIATIONS

__all__ = ["delete", "details", "reroll", "retry", "vary"]

log = logging.getLogger(__name__)


async def reroll(context: DiscordContext, interaction: discord.Interaction, job_id: str) -> None:
    await _again(context, interaction, job_id, "reroll")


async def vary(context: DiscordContext, interaction: discord.Interaction, job_id: str) -> None:
    await _again(context, interaction, job_id, "vary")


async def retry(context: DiscordContext, interaction: discord.Interaction, job_id: str) -> None:
    await _again(context, interaction, job_id, "retry")


async def _again(
    context: DiscordContext, interaction: discord.Interaction, job_id: str, action: str
) -> None:
    """Reroll and Variations (new seeds) or Try again (the job as it was asked for), charged
    to whoever clicked, answered in a new message."""
    reply = await _first_click(context, interaction, action, job_id)
    if reply is None:
        return
    service = context.runtime.service
    start: JobStarter
    if action == "retry":
        start = functools.partial(service.retry, job_id)
    else:
        n = VARIATIONS if action == "vary" else None
        start = functools.partial(service.reroll, job_id, n=n)
    await run_job(interaction, reply, start)


async def _first_click(
    context: DiscordContext, interaction: discord.Interaction, action: str, job_id: str
) -> Reply | None:
    """Defer the click; ``None`` when there is nothing more to do: a redelivery, or the same
    member pressing the same button again within ``CLICK_DEBOUNCE`` (told privately)."""
    reply = Reply(interaction)
    if not await reply.defer():
        return None
    if await context.runtime.service.first_click(to_requester(interaction), action, job_id):
        return reply
    log.info("job %s: repeated %s click by %s ignored", job_id, action, interaction.user.id)
    await reply.say(ALREADY_WORKING)
    return None


async def details(context: DiscordContext, interaction: discord.Interaction, job_id: str) -> None:
    reply = Reply(interaction, ephemeral=True)
    if not await reply.defer():
        return
    try:
        record = await context.runtime.service.job(job_id)
    except BotError as err:
        await reply.fail(err)
        return
    spec = context.runtime.catalog.find(record.request.model)
    label = spec.label if spec is not None else record.request.model
    await interaction.edit_original_response(embed=details_embed(record, model_label=label))


async def delete(context: DiscordContext, interaction: discord.Interaction, job_id: str) -> None:
    """The requester or an admin removes the result message; anyone else is told why not."""
    if await acknowledge(interaction) is False:  # an update of the clicked message: silent
        return
    try:
        record = await context.runtime.service.job(job_id)
    except (JobNotFoundError, UnknownModelError):
        record = None
    user_id = str(interaction.user.id)
    if record is None or not may_act_on(to_requester(interaction), record.requester):
        await interaction.followup.send(DELETE_NOT_ALLOWED, ephemeral=True)
        return
    message = interaction.message
    if message is None:
        return
    try:
        await message.delete()
    except discord.NotFound:
        return  # already gone (a double click, or a moderator was quicker)
    except discord.Forbidden:
        # The interaction token can delete the message the button is on, even where the bot
        # lacks channel access.
        await interaction.delete_original_response()
    log.info("job %s: result message %s deleted by %s", job_id, message.id, user_id)

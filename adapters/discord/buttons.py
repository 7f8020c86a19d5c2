"""The buttons under a result: Reroll, Variations, Details, Delete; and Try again under a job a
restart interrupted.

Each is a ``DynamicItem`` whose custom id is ``imagine:<action>:<job id>``; the parameters come
from the ledger, so a button works on any message the bot ever sent, across restarts.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import discord

from adapters.discord.render import accepting, details_embed, is_admin, to_requester
from adapters.discord.reply import Reply, acknowledge, run_job
from bot.errors import BotError, JobNotFoundError, UnknownModelError
from bot.messages import ALREADY_WORKING, BUTTON_LABELS, DELETE_NOT_ALLOWED

if TYPE_CHECKING:
    from adapters.discord.client import ImagineClient

__all__ = ["CUSTOM_ID", "VARIATIONS", "JobButton", "custom_id"]

log = logging.getLogger(__name__)

CUSTOM_ID = re.compile(
    r"imagine:(?P<action>reroll|vary|details|delete|retry):(?P<job_id>[\w-]{1,80})"
)
VARIATIONS = 4  # images a Variations click asks for (capped by the model's max n)

_STYLES = {
    "reroll": discord.ButtonStyle.primary,
    "vary": discord.ButtonStyle.secondary,
    "details": discord.ButtonStyle.secondary,
    "delete": discord.ButtonStyle.danger,
    "retry": discord.ButtonStyle.primary,
}
_EMOJI = {"reroll": "🔄", "vary": "🎲", "details": "ℹ️", "delete": "🗑️", "retry": "🔁"}


def custom_id(action: str, job_id: str) -> str:
    value = f"imagine:{action}:{job_id}"
    if not CUSTOM_ID.fullmatch(value):
        raise ValueError(f"job id {job_id!r} cannot go into a custom id")
    return value


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID):
    def __init__(self, action: str, job_id: str) -> None:
        label = BUTTON_LABELS[action]
        if action == "vary":
            label = f"{label} ×{VARIATIONS}"
        super().__init__(
            discord.ui.Button(
                label=label,
                style=_STYLES[action],
                emoji=_EMOJI[action],
                custom_id=custom_id(action, job_id),
            )
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> JobButton:
        return cls(match["action"], match["job_id"])

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return accepting(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        client = cast("ImagineClient", interaction.client)
        try:
            async with client.runtime.service.handling():  # a stop waits for it
                await _ACTIONS[self.action](client, interaction, self.job_id)
        except Exception as exc:
            # The one error hook, shared with the slash commands.
            await client.tree.report_unexpected(interaction, exc)


async def _again(
    client: ImagineClient, interaction: discord.Interaction, job_id: str, action: str
) -> None:
    """Reroll and Variations (new seeds) or Try again (the job as it was asked for), charged
    to whoever clicked, answered in a new message."""
    reply = await _first_click(client, interaction, action, job_id)
    if reply is None:
        return
    service = client.runtime.service
    if action == "retry":
        start = service.retry
    else:
        start = functools.partial(service.reroll, n=VARIATIONS if action == "vary" else None)
    await run_job(
        interaction,
        reply,
        lambda requester, deliver, progress, reach: start(
            job_id,
            requester,
            event_id=str(interaction.id),
            deliver=deliver,
            progress=progress,
            reach=reach,
        ),
    )


async def _first_click(
    client: ImagineClient, interaction: discord.Interaction, action: str, job_id: str
) -> Reply | None:
    """Defer the click; ``None`` when there is nothing more to do: a redelivery, or the same
    member pressing the same button again within ``CLICK_DEBOUNCE`` (told privately)."""
    reply = Reply(interaction)
    if not await reply.defer():
        return None
    if await client.runtime.service.first_click(to_requester(interaction), action, job_id):
        return reply
    log.info("job %s: repeated %s click by %s ignored", job_id, action, interaction.user.id)
    await reply.say(ALREADY_WORKING)
    return None


async def _details(client: ImagineClient, interaction: discord.Interaction, job_id: str) -> None:
    reply = Reply(interaction, ephemeral=True)
    if not await reply.defer():
        return
    try:
        record = await client.runtime.service.job(job_id)
    except BotError as err:
        await reply.fail(err)
        return
    spec = client.runtime.catalog.find(record.request.model)
    label = spec.label if spec is not None else record.request.model
    await interaction.edit_original_response(embed=details_embed(record, model_label=label))


async def _delete(client: ImagineClient, interaction: discord.Interaction, job_id: str) -> None:
    """The requester or an admin removes the result message; anyone else is told why not."""
    if await acknowledge(interaction) is False:  # an update of the clicked message: silent
        return
    try:
        record = await client.runtime.service.job(job_id)
    except (JobNotFoundError, UnknownModelError):
        record = None
    user_id = str(interaction.user.id)
    allowed = is_admin(interaction) or (record is not None and record.requester.user_id == user_id)
    if not allowed:
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


Action = Callable[["ImagineClient", discord.Interaction, str], Awaitable[None]]

_ACTIONS: dict[str, Action] = {
    "reroll": functools.partial(_again, action="reroll"),
    "vary": functools.partial(_again, action="vary"),
    "details": _details,
    "delete": _delete,
    "retry": functools.partial(_again, action="retry"),
}

"""One interaction's answer, from the deferred "thinking" message to the result or the error.

Discord rules this module is built around (Discord's interaction documentation):

- The first response must come within 3 s: ``defer(thinking=True)`` first, work after.
- Whether the answer is ephemeral is decided by the defer. After a public defer, the first
  followup would replace the loading message publicly whatever its flags, so an error the user
  can fix deletes the loading message and then sends an ephemeral followup.
- The interaction token lasts 15 minutes. A job that finishes later (or whose loading message a
  moderator deleted) is posted to the channel with the bot token, mentioning the requester.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import discord

from adapters.discord.button import result_view
from adapters.discord.context import context_of
from adapters.discord.destination import TOKEN_GONE_CODES, TOKEN_MARGIN, Destination
from adapters.discord.render import fitted, image_files, result_embed, to_requester
from adapters.discord.spoiler import spoiler_for
from bot.errors import BotError, DeliveryError, InvalidRequestError
from bot.messages import (
    DELIVERY_FAILED,
    admin_mistake_text,
    describe,
    is_operator_fault,
    late_delivery_text,
)
from bot.models import GeneratedImage, GenerationResult, Requester
from bot.provider.imaging import Refitter

__all__ = [
    "ALREADY_ACKNOWLEDGED",
    "MAX_CONTENT",
    "TOKEN_GONE_CODES",
    "TOKEN_MARGIN",
    "UNKNOWN_INTERACTION",
    "AdminAction",
    "Reply",
    "acknowledge",
    "answer_admin",
    "channel_mention",
    "late_text",
    "reach",
]

log = logging.getLogger(__name__)

ALREADY_ACKNOWLEDGED = 40060
UNKNOWN_INTERACTION = 10062
# How long Discord keeps an interaction's token, and so its reply, open.
REPLY_MINUTES = 15
MAX_CONTENT = 2000  # characters in one Discord message

# An admin command's work, run as the caller: the answer's text, and a file to attach if any.
AdminAction = Callable[[Requester], Awaitable[tuple[str, discord.File | None]]]


async def acknowledge(
    interaction: discord.Interaction, *, thinking: bool = False, ephemeral: bool = False
) -> discord.InteractionCallbackResponse[discord.Client] | Literal[False] | None:
    """``interaction.response.defer``, or False when there is nothing more to do: the gateway
    redelivered an interaction that is already being answered (40060), or it arrived too late
    to be answered at all (10062)."""
    try:
        return await interaction.response.defer(thinking=thinking, ephemeral=ephemeral)
    except discord.HTTPException as exc:
        if exc.code == ALREADY_ACKNOWLEDGED:
            log.info("interaction %s was delivered twice; answering once", interaction.id)
            return False
        if exc.code == UNKNOWN_INTERACTION:
            log.warning(
                "interaction %s expired before it could be acknowledged (over 3 s)",
                interaction.id,
            )
            return False
        raise


class Reply:
    """Tracks how an interaction was acknowledged so that the answer goes where Discord
    allows. Stored in ``interaction.extras["reply"]`` for the tree's error hook."""

    def __init__(self, interaction: discord.Interaction, *, ephemeral: bool = False) -> None:
        self.interaction = interaction
        self.ephemeral = ephemeral
        self.loading_message_id: int | None = None
        self.spoiler = False  # images as spoilers (the server's moderation rules)
        self._progress: asyncio.Task[None] | None = None
        interaction.extras["reply"] = self

    # -- acknowledging ----------------------------------------------------------------------

    async def defer(self) -> bool:
        """The 3-second acknowledgement: Discord shows "<bot> is thinking…". False when there
        is nothing more to do (see ``acknowledge``)."""
        response = await acknowledge(self.interaction, thinking=True, ephemeral=self.ephemeral)
        if response is False:
            return False
        if response is not None:
            self.loading_message_id = response.message_id
        return True

    @property
    def refitter(self) -> Refitter:
        """The process's one bound on re-encoding, from the client's runtime."""
        return context_of(self.interaction).runtime.refitter

    def token_usable(self) -> bool:
        return discord.utils.utcnow() + TOKEN_MARGIN < self.interaction.expires_at

    def show_progress(
        self, text: str, *, view: discord.ui.View | None = None
    ) -> asyncio.Task[None]:
        """Replace "thinking…" with ``text`` and ``view``'s buttons (none by default), without
        holding up the job; the edit's task is returned for whoever wants to wait on it."""
        self._progress = asyncio.create_task(self._edit_quietly(content=text, view=view))
        return self._progress

    async def _edit_quietly(self, **fields: Any) -> None:
        try:
            await self.interaction.edit_original_response(**fields)
        except discord.HTTPException as exc:
            log.debug("interaction %s: progress edit failed: %s", self.interaction.id, exc)

    async def settle(self) -> None:
        """Let a progress edit finish first, so it never lands after the answer."""
        if self._progress is not None:
            task, self._progress = self._progress, None
            with contextlib.suppress(Exception):
                await task

    # -- answering ----------------------------------------------------------------------------

    async def say(self, text: str, *, file: discord.File | None = None) -> None:
        """A private answer (the caller deferred ephemerally, or has not answered yet)."""
        await self.settle()
        interaction = self.interaction
        files = [file] if file is not None else []
        if not interaction.response.is_done():
            await interaction.response.send_message(text, files=files, ephemeral=True)
        elif self.ephemeral:
            await interaction.edit_original_response(content=text, attachments=files)
        else:
            await self._private_followup(text, files)

    async def _private_followup(self, text: str, files: list[discord.File]) -> None:
        """After a public defer: remove the loading message, then answer ephemerally."""
        interaction = self.interaction
        with contextlib.suppress(discord.NotFound):
            await interaction.delete_original_response()
        await interaction.followup.send(text, files=files, ephemeral=True, wait=True)

    async def fail(self, err: BaseException, *, logged: bool = False) -> None:
        """Tell the user what went wrong: what to do for their own mistakes, "temporarily
        unavailable" (and a full log line, unless ``logged`` already) for the operator's.
        Nothing when they were told already (``notified``)."""
        interaction = self.interaction
        if isinstance(err, BotError) and err.notified:
            return
        if is_operator_fault(err) and not logged:
            log.error(
                "interaction %s (user %s, job %s) failed: %s: %s",
                interaction.id,
                interaction.user.id,
                (err.job_id if isinstance(err, BotError) else None) or "-",
                type(err).__name__,
                err,
                exc_info=err if not isinstance(err, BotError) else None,
            )
        text = describe(err, channel_label=channel_mention)
        try:
            if self.token_usable():
                await self.say(text)
                return
        except discord.HTTPException as exc:
            if exc.code not in TOKEN_GONE_CODES:
                raise
        if self.ephemeral:
            # A private answer must not turn public; the reply is gone, so only the log has it.
            log.warning(
                "interaction %s: reply expired before the error could be shown", interaction.id
            )
            return
        await self._post_to_channel(content=f"<@{interaction.user.id}> {text}")

    async def deliver(self, result: GenerationResult) -> None:
        """One message: the images (each within the interaction's upload limit), the embed
        and the buttons. Falls back to the channel when the token is gone. When Discord
        refuses it, tells the user and raises ``DeliveryError`` so the job is refunded."""
        async with fitted(result, self.interaction.filesize_limit, self.refitter) as images:
            await self._deliver(result, images)

    async def _deliver(self, result: GenerationResult, images: Sequence[GeneratedImage]) -> None:
        interaction = self.interaction
        embed = result_embed(result)
        self.spoiler = await spoiler_for(interaction)  # the server's rule, outside NSFW
        await self.settle()
        try:
            if await self._edit_into_result(result, images, embed):
                return
            await self._post_to_channel(
                content=late_text(str(interaction.user.id)),
                embed=embed,
                files=image_files(result, images, spoiler=self.spoiler),
                view=result_view(result.job_id),
            )
        except discord.HTTPException as exc:
            log.error(
                "job %s: Discord refused the result for interaction %s: %s %s %s",
                result.job_id,
                interaction.id,
                exc.status,
                exc.code,
                exc.text,
            )
            with contextlib.suppress(discord.HTTPException):
                await self.say(DELIVERY_FAILED)
            raise DeliveryError(
                f"Discord refused the result: {exc.status}", notified=True, job_id=result.job_id
            ) from exc

    async def _edit_into_result(
        self, result: GenerationResult, images: Sequence[GeneratedImage], embed: discord.Embed
    ) -> bool:
        """The loading message becomes the result; False when the interaction's token can no
        longer do that (expired, or the message was deleted)."""
        interaction = self.interaction
        if not self.token_usable():
            log.info(
                "interaction %s expired; posting job %s to the channel",
                interaction.id,
                result.job_id,
            )
            return False
        try:
            await interaction.edit_original_response(
                content=None,
                embed=embed,
                attachments=image_files(result, images, spoiler=self.spoiler),
                view=result_view(result.job_id),
            )
        except discord.HTTPException as exc:
            if exc.code not in TOKEN_GONE_CODES:
                raise
            log.info(
                "interaction %s: reply closed (%s); posting job %s to the channel",
                interaction.id,
                exc.code,
                result.job_id,
            )
            return False
        return True

    async def _post_to_channel(self, **fields: Any) -> None:
        """With the bot token, mentioning (and pinging) only the requester; then remove the
        stale loading message if Discord still shows it."""
        interaction = self.interaction
        destination = Destination(
            user_id=str(interaction.user.id),
            channel_id=interaction.channel_id,
            guild_id=interaction.guild_id,
            message_id=None if self.ephemeral else self.loading_message_id,
        )
        await destination.post(interaction.client, **fields)


def channel_mention(channel_id: str) -> str:
    return f"<#{channel_id}>"


def late_text(user_id: str) -> str:
    """What a result posted to the channel says, once the member's reply has closed."""
    return late_delivery_text(f"<@{user_id}>", platform="Discord", reply_minutes=REPLY_MINUTES)


def reach(interaction: discord.Interaction, reply: Reply) -> dict[str, str]:
    """What another process needs to answer about this job: the restart notice
    (``adapters.discord.notice``) or the job's result (``adapters.discord.courier``). The
    interaction's webhook and its expiry, the message, the channel, the upload limit."""
    return {
        "app": str(interaction.application_id),
        "token": interaction.token,
        "expires": interaction.expires_at.isoformat(),
        "channel": str(interaction.channel_id or ""),
        "guild": str(interaction.guild_id or ""),
        "message": str(reply.loading_message_id or ""),
        "user": str(interaction.user.id),
        "limit": str(interaction.filesize_limit),  # what its uploads may weigh
    }


async def answer_admin(
    interaction: discord.Interaction, action: AdminAction, *, overflow_name: str | None = None
) -> None:
    """Defer privately, run ``action`` as the caller, show its text (and file). A text too
    long for one message is cut; with ``overflow_name`` it also comes whole as that file."""
    reply = Reply(interaction, ephemeral=True)
    if not await reply.defer():
        return
    actor = to_requester(interaction)
    try:
        text, file = await action(actor)
    except InvalidRequestError as err:
        await reply.say(admin_mistake_text(err.reason))
        return
    except BotError as err:
        await reply.say(describe(err))
        return
    command = interaction.command.qualified_name if interaction.command else "?"
    log.info("admin %s in server %s: /%s", actor.user_id, actor.workspace_id, command)
    if len(text) > MAX_CONTENT:
        if file is None and overflow_name is not None:
            file = discord.File(io.BytesIO(text.encode()), filename=overflow_name)
        text = text[: MAX_CONTENT - 1] + "…"
    await reply.say(text, file=file)

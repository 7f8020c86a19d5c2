"""Moderation on Discord: the refusal with its "Ask an admin" button, the review post with
Approve / Deny in the server's review channel, and the approved job (spoilers: spoiler.py).

The buttons (``adapters.discord.button``) carry the review id, which leads to the review in
the database, so they work on any message, across restarts. Who may decide is checked by the
core (``Moderation.decide``: ``actor.is_admin``, computed here from the member's permissions
as for the quota commands).

A denied member is told with a mention in the channel they asked in; the refused prompt is
not repeated there (Discord has no ephemeral message a bot can send unprompted).
"""

from __future__ import annotations

import contextlib
import logging

import discord

from adapters.discord.button import refusal_view, result_view, review_view
from adapters.discord.context import DiscordContext
from adapters.discord.render import (
    EMBED_COLOUR,
    fit_images,
    image_files,
    result_embed,
    to_requester,
)
from adapters.discord.reply import Reply, acknowledge
from adapters.discord.spoiler import spoiler_wanted
from bot.errors import BotError, DeliveryError, PromptRefusedError
from bot.messages import (
    REVIEW_POST_FAILED,
    REVIEW_SENT,
    describe,
    review_approved_delivery_text,
    review_decided_text,
    review_denied_text,
    review_fields,
    review_title,
)
from bot.models import GenerationResult, Review
from bot.moderation.approval import run_approved

__all__ = ["approve", "ask", "deny", "review_embed", "tell_refused"]

log = logging.getLogger(__name__)

_FIELD_MAX = 1024
_DESCRIPTION_MAX = 4096


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the refusal ---------------------------------------------------------------------------


async def tell_refused(reply: Reply, err: PromptRefusedError) -> None:
    """The refusal, privately, with an "Ask an admin" button carrying the review id (none
    when the core kept no review)."""
    if err.review_id is None:
        await reply.fail(err)
        return
    log.info("interaction %s: prompt refused (%s)", reply.interaction.id, err.source)
    interaction = reply.interaction
    text = describe(err)
    view = refusal_view(err.review_id)
    await reply.settle()  # a "Generating…" edit must not land after the refusal
    if not interaction.response.is_done():
        await interaction.response.send_message(text, view=view, ephemeral=True)
    elif reply.ephemeral:
        await interaction.edit_original_response(content=text, view=view)
    else:
        # After a public defer: remove the loading message, then answer privately.
        with contextlib.suppress(discord.NotFound):
            await interaction.delete_original_response()
        await interaction.followup.send(text, view=view, ephemeral=True, wait=True)


# -- Ask an admin ---------------------------------------------------------------------------


async def ask(context: DiscordContext, interaction: discord.Interaction, review_id: str) -> None:
    """The refused member asks for a review (``Moderation.ask``): the prompt goes to the review
    channel with Approve / Deny; the refusal message becomes "sent to the admins"."""
    if await acknowledge(interaction) is False:  # an update of the clicked message
        return
    moderation = context.runtime.moderation
    try:
        post = await moderation.ask(review_id, to_requester(interaction))
    except BotError as err:
        log.info("review %s: request refused: %s", review_id, type(err).__name__)
        await interaction.followup.send(describe(err), ephemeral=True)
        return
    channel = context.get_partial_messageable(int(post.channel_id), guild_id=interaction.guild_id)
    try:
        await channel.send(
            embed=review_embed(post.review),
            view=review_view(review_id),
            allowed_mentions=discord.AllowedMentions.none(),
        )
    except discord.HTTPException as exc:
        log.error(
            "review %s: cannot post in the review channel %s (%s %s): give the bot View "
            "Channel, Send Messages and Embed Links there",
            review_id,
            post.channel_id,
            exc.status,
            exc.code,
        )
        await moderation.withdraw(review_id)
        await interaction.followup.send(REVIEW_POST_FAILED, ephemeral=True)
        return
    log.info("review %s: sent to the review channel %s", review_id, post.channel_id)
    await interaction.edit_original_response(content=REVIEW_SENT, view=None)


def review_embed(review: Review, *, decided: str | None = None) -> discord.Embed:
    """What the admins see: the prompt, who asked where, the rule that matched."""
    embed = discord.Embed(
        title=review_title(review),
        description=_clip(review.request.prompt, _DESCRIPTION_MAX),
        colour=EMBED_COLOUR,
    )
    fields = review_fields(
        review,
        user=f"<@{review.requester.user_id}>",
        channel=f"<#{review.requester.channel_id}>",
    )
    for name, value in fields:
        embed.add_field(name=name, value=_clip(value, _FIELD_MAX), inline=len(value) < 40)
    if decided is not None:
        embed.add_field(name="\u200b", value=_clip(decided, _FIELD_MAX), inline=False)
    embed.set_footer(text=f"review {review.review_id}")
    return embed


# -- Approve / Deny -------------------------------------------------------------------------


async def approve(
    context: DiscordContext, interaction: discord.Interaction, review_id: str
) -> None:
    await _decide(context, interaction, review_id, approve=True)


async def deny(context: DiscordContext, interaction: discord.Interaction, review_id: str) -> None:
    await _decide(context, interaction, review_id, approve=False)


async def _decide(
    context: DiscordContext, interaction: discord.Interaction, review_id: str, *, approve: bool
) -> None:
    if await acknowledge(interaction) is False:
        return
    actor = to_requester(interaction)
    try:
        review = await context.runtime.moderation.decide(review_id, actor, approve)
    except BotError as err:
        log.info("review %s: decision by %s refused: %s", review_id, actor.user_id, err)
        await interaction.followup.send(describe(err), ephemeral=True)
        return
    decided = review_decided_text(approve, f"<@{actor.user_id}>")
    log.info("review %s: %s by %s", review_id, review.state, actor.user_id)
    with contextlib.suppress(discord.HTTPException):
        await interaction.edit_original_response(
            content=decided, embed=review_embed(review, decided=decided), view=None
        )
    user_id = int(review.requester.user_id)
    channel = context.get_partial_messageable(
        int(review.requester.channel_id), guild_id=interaction.guild_id
    )
    if not approve:
        try:
            await channel.send(review_denied_text(f"<@{user_id}>"), allowed_mentions=_only(user_id))
        except discord.HTTPException as exc:
            log.warning("review %s: could not tell the member: %s", review_id, exc)
        return
    await _run_approved(context, interaction, review, channel)


def _only(user_id: int) -> discord.AllowedMentions:
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(user_id)])


async def _run_approved(
    context: DiscordContext,
    interaction: discord.Interaction,
    review: Review,
    channel: discord.PartialMessageable,
) -> None:
    """The approved job (``run_approved``), posted in the channel the member asked in with the
    bot's token, mentioning them."""
    user_id = int(review.requester.user_id)
    limit = interaction.filesize_limit
    runtime = context.runtime
    client = interaction.client

    async def deliver(result: GenerationResult) -> None:
        spoiler = await spoiler_wanted(
            runtime, review.requester.workspace_id, client.get_channel(channel.id)
        )
        try:
            with runtime.refitter.holding(result.images, limit):
                images = await fit_images(result.images, limit, runtime.refitter)
                await channel.send(
                    review_approved_delivery_text(f"<@{user_id}>"),
                    embed=result_embed(result),
                    files=image_files(result, images, spoiler=spoiler),
                    view=result_view(result.job_id),
                    allowed_mentions=_only(user_id),
                )
        except discord.HTTPException as exc:
            log.error(
                "review %s: job %s: Discord refused the result: %s %s",
                review.review_id,
                result.job_id,
                exc.status,
                exc.code,
            )
            raise DeliveryError(f"Discord refused the result: {exc.status}") from exc

    run = await run_approved(runtime.service, review, deliver=deliver)
    if run.to_user is not None:
        with contextlib.suppress(discord.HTTPException):
            await channel.send(f"<@{user_id}> {run.to_user}", allowed_mentions=_only(user_id))
    if run.to_admin is not None:
        with contextlib.suppress(discord.HTTPException):
            await interaction.followup.send(run.to_admin, ephemeral=True)

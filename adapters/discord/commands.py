"""The slash commands for members: ``/imagine``, ``/quota`` and ``/models``.

Commands are built at start-up from the catalog (model and size choices, the largest ``n``),
so this module avoids ``from __future__ import annotations``: discord.py reads the parameter
annotations, which refer to values computed here.
"""

import functools
import logging
from typing import Any

import discord
from discord import app_commands

from adapters.discord.context import DiscordContext
from adapters.discord.job import run_job
from adapters.discord.render import model_suggestions, to_generation_request, to_requester
from adapters.discord.reply import Reply
from bot.errors import BotError, InvalidRequestError
from bot.messages import allowance_text, models_table, progress_text
from bot.parsing import MAX_SEED

__all__ = ["MAX_CHOICES", "add_commands"]

log = logging.getLogger(__name__)

MAX_CHOICES = 25  # Discord's limit per option
_MAX_STRING_OPTION = 6000
_MAX_EMBED_DESCRIPTION = 4096


def add_commands(tree: app_commands.CommandTree[Any], context: DiscordContext) -> None:
    runtime = context.runtime
    catalog = runtime.catalog
    service = runtime.service
    max_n = max(1, min(10, max(spec.max_n for spec in catalog)))
    max_prompt = max(1, min(_MAX_STRING_OPTION, service.max_prompt_length))
    model_choices = [
        app_commands.Choice(name=spec.label[:100], value=spec.short_name) for spec in catalog
    ]
    sizes = list(dict.fromkeys(size for spec in catalog for size in spec.sizes))

    async def imagine(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, max_prompt],
        model: str | None = None,
        size: str | None = None,
        n: app_commands.Range[int, 1, max_n] | None = None,
        negative: app_commands.Range[str, 1, 1000] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
    ) -> None:
        async with service.handling():  # a stop waits for it
            await _imagine(interaction, prompt, model, size, n, negative, seed)

    async def _imagine(
        interaction: discord.Interaction,
        prompt: str,
        model: str | None,
        size: str | None,
        n: int | None,
        negative: str | None,
        seed: int | None,
    ) -> None:
        # Parsing is pure (no I/O): a request that cannot run gets a truly ephemeral answer
        # as the first response. Everything slow comes after the defer.
        try:
            request = to_generation_request(
                service, prompt, model=model, size=size, n=n, negative=negative, seed=seed
            )
        except InvalidRequestError as err:
            await Reply(interaction, ephemeral=True).fail(err)
            return
        reply = Reply(interaction)
        if not await reply.defer():
            return
        label = catalog.get(request.model).label
        start = functools.partial(service.generate, request)
        await run_job(interaction, reply, start, progress=progress_text(request, label))

    imagine = app_commands.describe(
        prompt="What to draw. Flags work here too: --ar 16:9 --no text",
        model="Which model draws it",
        size="Width x height in pixels",
        n=f"How many images (1-{max_n})",
        negative="What to leave out",
        seed="A number, to repeat an image exactly",
    )(imagine)
    if len(model_choices) <= MAX_CHOICES:
        imagine = app_commands.choices(model=model_choices)(imagine)
    if sizes and len(sizes) <= MAX_CHOICES:
        size_choices = [app_commands.Choice(name=size, value=size) for size in sizes]
        imagine = app_commands.choices(size=size_choices)(imagine)
    imagine_command: app_commands.Command[Any, ..., None] = app_commands.Command(
        name="imagine", description="Generate images from a prompt", callback=imagine
    )
    if len(model_choices) > MAX_CHOICES:

        @imagine_command.autocomplete("model")
        async def _suggest_models(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return [
                app_commands.Choice(name=label, value=value)
                for label, value in model_suggestions(catalog, current)
            ]

    app_commands.guild_only(imagine_command)
    tree.add_command(imagine_command)

    @tree.command(name="quota", description="What you can still generate, and when it resets")
    @app_commands.guild_only()
    async def quota(interaction: discord.Interaction) -> None:
        reply = Reply(interaction, ephemeral=True)
        if not await reply.defer():
            return
        try:
            allowance = await service.allowance(to_requester(interaction))
        except BotError as err:
            await reply.fail(err)
            return
        await reply.say(allowance_text(allowance))

    @tree.command(name="models", description="The models you can use, with their prices")
    async def models(interaction: discord.Interaction) -> None:
        # No I/O: answered at once.
        table = models_table(catalog, default=catalog.default)
        lines = table.splitlines()
        while len("\n".join(lines)) > _MAX_EMBED_DESCRIPTION - 8 and len(lines) > 1:
            lines.pop()
        embed = discord.Embed(description="```\n" + "\n".join(lines) + "\n```")
        await interaction.response.send_message(embed=embed, ephemeral=True)

    del quota, models  # registered on the tree

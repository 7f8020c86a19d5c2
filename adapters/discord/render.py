"""Converters between discord.py objects and the core's plain values: slash-command options to
a ``GenerationRequest``, an interaction to a ``Requester``, a result to an embed, files and
buttons. No I/O except ``fit_images`` and ``fitted``, which re-encode through the process's
``Refitter``."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import AsyncIterator, Sequence

import discord

from bot.catalog import ModelCatalog
from bot.messages import job_details, result_fields
from bot.models import GeneratedImage, GenerationRequest, GenerationResult, JobRecord, Requester
from bot.parsing import RequestOptions
from bot.provider.imaging import Refitter
from bot.service import ImageService

__all__ = [
    "EMBED_COLOUR",
    "MAX_ATTACHMENTS",
    "PLATFORM",
    "accepting",
    "details_embed",
    "fit_images",
    "fitted",
    "image_files",
    "is_admin",
    "model_suggestions",
    "result_embed",
    "to_generation_request",
    "to_requester",
]

log = logging.getLogger(__name__)

MAX_ATTACHMENTS = 10
EMBED_COLOUR = discord.Colour(0x5865F2)
_DESCRIPTION_MAX = 4096
_FIELD_MAX = 1024

PLATFORM = "discord"  # Requester.platform, and the ledger rows of Discord jobs


def to_generation_request(
    service: ImageService,
    prompt: str,
    *,
    model: str | None = None,
    size: str | None = None,
    n: int | None = None,
    negative: str | None = None,
    seed: int | None = None,
) -> GenerationRequest:
    """The slash command's options merged with flags typed in the prompt (``--ar 16:9``), by
    the core parser. Pure: raises ``InvalidRequestError`` with a one-line reason."""
    options = RequestOptions(model=model, size=size, n=n, seed=seed, negative=negative)
    return service.parse(prompt, options)


def accepting(interaction: discord.Interaction) -> bool:
    """False once this process is stopping: the interaction is left unanswered, for another
    copy of the bot (every session of the shard receives it) to take."""
    runtime = getattr(interaction.client, "runtime", None)
    return runtime is None or not runtime.health.draining


def is_admin(interaction: discord.Interaction) -> bool:
    """Administrator or Manage Server, from the permissions Discord resolved for the member in
    this channel (server admins can override a command's default permissions)."""
    permissions = interaction.permissions
    return permissions.administrator or permissions.manage_guild


def to_requester(interaction: discord.Interaction) -> Requester:
    user = interaction.user
    roles: tuple[str, ...] = ()
    if isinstance(user, discord.Member):
        roles = tuple(str(role.id) for role in user.roles if not role.is_default())
    return Requester(
        platform=PLATFORM,
        workspace_id=str(interaction.guild_id or ""),
        channel_id=str(interaction.channel_id or ""),
        user_id=str(user.id),
        role_ids=roles,
        display_name=user.display_name,
        is_admin=is_admin(interaction),
    )


def model_suggestions(catalog: ModelCatalog, current: str) -> list[tuple[str, str]]:
    """``(label, value)`` pairs for the model option's autocomplete, best matches first."""
    needle = current.strip().casefold()
    ranked = []
    for spec in catalog:
        names = [spec.short_name, spec.id, spec.label, *spec.aliases]
        haystack = [name.casefold() for name in names]
        if not needle or any(needle in name for name in haystack):
            starts = any(name.startswith(needle) for name in haystack)
            ranked.append(
                (0 if starts else 1, f"{spec.label} ({spec.short_name})", spec.short_name)
            )
    ranked.sort(key=lambda item: item[0])
    return [(label[:100], value) for _, label, value in ranked[:25]]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result_embed(result: GenerationResult) -> discord.Embed:
    """Prompt as the description; model, size, seed, cost and quota left as fields; the job
    id in the footer."""
    embed = discord.Embed(
        description=_clip(result.request.prompt, _DESCRIPTION_MAX), colour=EMBED_COLOUR
    )
    revised = result.revised_prompt
    if revised and revised != result.request.prompt:
        embed.add_field(name="Revised prompt", value=_clip(revised, _FIELD_MAX), inline=False)
    if result.request.negative_prompt:
        embed.add_field(
            name="Negative prompt",
            value=_clip(result.request.negative_prompt, _FIELD_MAX),
            inline=False,
        )
    for name, value in result_fields(result):
        embed.add_field(name=name, value=_clip(value, _FIELD_MAX), inline=True)
    embed.set_footer(text=f"job {result.job_id}")
    return embed


def details_embed(record: JobRecord, *, model_label: str) -> discord.Embed:
    embed = discord.Embed(colour=EMBED_COLOUR)
    for name, value in job_details(
        record, model_label=model_label, requester=f"<@{record.requester.user_id}>"
    ):
        inline = name not in ("Prompt", "Negative prompt", "Job id")
        embed.add_field(name=name, value=_clip(value, _FIELD_MAX), inline=inline)
    return embed


async def fit_images(
    images: Sequence[GeneratedImage], max_bytes: int, refitter: Refitter
) -> tuple[GeneratedImage, ...]:
    """At most ``MAX_ATTACHMENTS`` images, each re-encoded (off the event loop) where it is
    larger than the interaction's ``attachment_size_limit``. One image at a time, through the
    process's ``refitter``: a job's images take turns with every other job's, so memory holds
    a few re-encodings, not one per image of every finished job."""
    kept = images[:MAX_ATTACHMENTS]
    if len(images) > MAX_ATTACHMENTS:
        log.warning("dropping %d image(s) over Discord's 10 attachments", len(images) - 10)
    return tuple([await refitter.fit(image, max_bytes) for image in kept])


@contextlib.asynccontextmanager
async def fitted(
    result: GenerationResult, max_bytes: int, refitter: Refitter
) -> AsyncIterator[tuple[GeneratedImage, ...]]:
    """``fit_images`` for a result about to be posted, its images counted by ``refitter``
    until the block ends (the upload)."""
    with refitter.holding(result.images, max_bytes):
        yield await fit_images(result.images, max_bytes, refitter)


def image_files(
    result: GenerationResult, images: Sequence[GeneratedImage], *, spoiler: bool = False
) -> list[discord.File]:
    """Fresh ``discord.File`` objects (discord.py closes them after each request); with
    ``spoiler``, Discord blurs them until clicked (``SPOILER_`` file names)."""
    stem = f"imagine-{result.job_id[:12]}"
    return [
        discord.File(
            io.BytesIO(image.data),
            filename=f"{stem}-{index}.{image.extension}",
            description=_clip(result.request.prompt, 1024),
            spoiler=spoiler,
        )
        for index, image in enumerate(images, start=1)
    ]

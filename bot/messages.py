"""Every sentence a user or operator reads, shared by Discord, Slack, the shell and the CLI.

Adapters format these strings for their platform (markdown, embeds, blocks) but never write
their own wording for a core outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from bot.catalog import ModelCatalog
from bot.errors import (
    BotError,
    ConfigError,
    ContentRejectedError,
    DuplicateRequestError,
    InvalidRequestError,
    JobNotFoundError,
    PermissionDeniedError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
)
from bot.models import MICROS_PER_USD, Allowance, GenerationResult, LimitUsage, ModelSpec

__all__ = [
    "GRAMMAR",
    "NO_ADAPTERS",
    "PREVIEW_WARNING",
    "TEMPORARILY_UNAVAILABLE",
    "allowance_text",
    "describe",
    "format_reset",
    "format_usd",
    "help_text",
    "is_operator_fault",
    "limit_label",
    "models_table",
    "result_summary",
]

GRAMMAR = "<prompt> [--model M] [--size WxH | --ar W:H] [--n N] [--seed S] [--no NEGATIVE]"

PREVIEW_WARNING = (
    "IMAGE_API_KEY is not set: using the offline preview provider, which draws labelled "
    "placeholder images at no cost. Set IMAGE_API_KEY (and IMAGE_API_BASE_URL for a provider "
    "other than the default) to generate real images."
)

NO_ADAPTERS = (
    "No chat platform is configured. Set DISCORD_TOKEN for Discord, and/or SLACK_BOT_TOKEN with "
    "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET and HTTP_PORT (HTTP mode) for Slack. "
    "To try the bot locally without a platform, run: imagine-bot shell"
)

TEMPORARILY_UNAVAILABLE = (
    "Image generation is temporarily unavailable. Nothing was charged; please try again later."
)

_LIMIT_LABELS = {
    "images_per_day": "daily image limit",
    "images_per_month": "monthly image limit",
    "usd_micros_per_month": "monthly spending limit",
    "server_usd_micros_per_month": "server's monthly spending cap",
}


def format_usd(micros: int) -> str:
    """``3000`` -> ``$0.003``; ``1500000`` -> ``$1.50``: cents always, more digits when needed."""
    sign = "-" if micros < 0 else ""
    dollars, rest = divmod(abs(micros), MICROS_PER_USD)
    fraction = f"{rest:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}${dollars}.{fraction}"


def format_reset(resets_at: datetime, now: datetime | None = None) -> str:
    """``2026-11-26 00:00 UTC (in 10h 8m)``."""
    now = now or datetime.now(UTC)
    stamp = resets_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    seconds = max(0, int((resets_at - now).total_seconds()))
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes = seconds // 60
    if days:
        left = f"{days}d {hours}h"
    elif hours:
        left = f"{hours}h {minutes}m"
    else:
        left = f"{max(minutes, 1)}m"
    return f"{stamp} (in {left})"


def limit_label(name: str) -> str:
    return _LIMIT_LABELS.get(name, name.replace("_", " "))


def _amount(name: str, value: int) -> str:
    return format_usd(value) if "usd" in name else f"{value} image{'s' if value != 1 else ''}"


def is_operator_fault(err: BaseException) -> bool:
    """Faults the user cannot fix: shown as "temporarily unavailable", logged in full."""
    if isinstance(err, ContentRejectedError):
        return False
    return isinstance(err, ProviderError | ConfigError) or not isinstance(err, BotError)


def describe(err: BaseException, *, now: datetime | None = None) -> str:
    """One short message for the user about ``err``, saying what to do next."""
    if isinstance(err, InvalidRequestError):
        return f"Sorry, I can't draw that: {err.reason}. Type `help` for the options."
    if isinstance(err, QuotaExceededError):
        used = _amount(err.limit, err.used)
        allowed = _amount(err.limit, err.allowed)
        who = "This server has" if err.limit.startswith("server") else "You have"
        return (
            f"{who} reached the {limit_label(err.limit)} ({used} of {allowed} used; this job "
            f"needs {_amount(err.limit, err.requested)}). It resets "
            f"{format_reset(err.resets_at, now)}. Nothing was charged."
        )
    if isinstance(err, ContentRejectedError):
        return (
            "The image service refused this prompt under its content policy. Nothing was "
            "charged; try rewording it."
        )
    if isinstance(err, ProviderTimeoutError):
        return "The image service took too long to answer. Nothing was charged; please try again."
    if isinstance(err, PermissionDeniedError):
        return f"Only server admins can {err.action}."
    if isinstance(err, JobNotFoundError):
        return "I can't find that image job any more; start a new one with /imagine."
    if isinstance(err, DuplicateRequestError):
        return "That request is already being handled."
    return TEMPORARILY_UNAVAILABLE


def help_text(catalog: ModelCatalog) -> str:
    return "\n".join(
        [
            f"Usage: {GRAMMAR}",
            "  --model   one of: "
            + ", ".join(catalog.names())
            + f" (default {catalog.default.short_name})",
            "  --size    e.g. 1024x1024; --ar 16:9 picks the model's nearest size instead",
            "  --n       how many images (1-" + str(max(s.max_n for s in catalog)) + ")",
            "  --seed    a number, to repeat an image exactly",
            "  --no      what to leave out (a negative prompt)",
            "Other commands: models (list with prices), quota (what you have left), help",
            "Example: a red fox in snow --ar 16:9 --n 2",
        ]
    )


def models_table(models: Iterable[ModelSpec], *, default: ModelSpec | None = None) -> str:
    """A plain aligned table: name, id, price per image at 1024x1024, sizes, max n."""
    rows = [("model", "id", "price/image", "max n", "sizes")]
    for spec in models:
        marker = " (default)" if default is not None and spec.id == default.id else ""
        rows.append(
            (
                spec.short_name + marker,
                spec.id,
                format_usd(spec.image_price_micros("1024x1024")),
                str(spec.max_n),
                ", ".join(spec.sizes),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def _usage_line(usage: LimitUsage, now: datetime | None) -> str:
    left = _amount(usage.name, usage.remaining)
    allowed = _amount(usage.name, usage.allowed)
    return (
        f"{limit_label(usage.name).capitalize()}: {left} left of {allowed}, "
        f"resets {format_reset(usage.resets_at, now)}"
    )


def allowance_text(allowance: Allowance, *, now: datetime | None = None) -> str:
    if not allowance.limits:
        return "You have no limits set: generate away."
    return "\n".join(_usage_line(u, now) for u in allowance.limits)


def _short_allowance(allowance: Allowance) -> str | None:
    for usage in allowance.limits:
        if usage.name == "images_per_day":
            return f"{usage.remaining} left today"
    for usage in allowance.limits:
        if usage.name == "images_per_month":
            return f"{usage.remaining} left this month"
    for usage in allowance.limits:
        if usage.name == "usd_micros_per_month":
            return f"{format_usd(usage.remaining)} left this month"
    return None


def result_summary(result: GenerationResult) -> str:
    """``flux · 1024x1024 · seed 42 · $0.006 · 18 left today`` (the prompt is shown apart)."""
    request = result.request
    parts = [result.model_label, request.size]
    if result.seed is not None:
        parts.append(f"seed {result.seed}")
    parts.append("preview, free" if result.preview else format_usd(result.cost_micros))
    if result.allowance is not None:
        short = _short_allowance(result.allowance)
        if short:
            parts.append(short)
    return " · ".join(parts)

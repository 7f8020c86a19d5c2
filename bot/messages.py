"""Every sentence a user or operator reads, shared by Discord, Slack, the shell and the CLI.

Adapters format these strings for their platform (markdown, embeds, blocks) but never write
their own wording for a core outcome.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from bot.catalog import ModelCatalog
from bot.errors import (
    BotError,
    ChannelNotAllowedError,
    ContentRejectedError,
    DeliveryError,
    DuplicateRequestError,
    InvalidRequestError,
    JobCancelledError,
    JobHandedOverError,
    JobNotFoundError,
    JobTimeoutError,
    PermissionDeniedError,
    PromptRefusedError,
    ProviderError,
    ProviderTimeoutError,
    ProviderWaitTooLongError,
    QueueFullError,
    QuotaExceededError,
    ReviewNotYoursError,
    ServerBusyError,
    ShuttingDownError,
    TooManyJobsError,
)
from bot.limit import LimitName, LimitScope
from bot.models import (
    Allowance,
    GenerationRequest,
    GenerationResult,
    JobRecord,
    JobState,
    Limits,
    LimitUsage,
    ModelSpec,
    ModerationEntry,
    QueueStatus,
    Review,
    ServerRules,
    UsageReport,
)
from bot.money import format_usd

__all__ = [
    "ADMIN_COMMANDS_ACTION",
    "ADMIN_NO_LIMITS",
    "ADMIN_USER_AND_ROLE",
    "BUTTON_LABELS",
    "CANCEL_CONFIRMED",
    "CANCEL_NOT_ALLOWED",
    "CANCEL_TOO_LATE",
    "COPY_IN_MEMORY",
    "DELETE_NOT_ALLOWED",
    "DELIVERY_FAILED",
    "GENERATING",
    "GRAMMAR",
    "HEALTHCHECK_NO_PORT",
    "NO_ADAPTERS",
    "NO_ADAPTERS_WAITING",
    "NO_REVIEW_CHANNEL",
    "PATTERNS_TOO_COMPLEX",
    "PATTERN_BACKREFERENCE",
    "PATTERN_CONDITIONAL",
    "PATTERN_LOOKAROUND",
    "PATTERN_POSSESSIVE",
    "PATTERN_TOO_COMPLEX",
    "PATTERN_UPPER_Z",
    "POSTGRES_DRIVER_MISSING",
    "PREVIEW_WARNING",
    "REROLL_HINT",
    "REVIEW_ALREADY_DECIDED",
    "REVIEW_ALREADY_REQUESTED",
    "REVIEW_BUTTON_LABELS",
    "REVIEW_NOT_FOUND",
    "REVIEW_NOT_REQUESTED",
    "REVIEW_NOT_YOURS",
    "REVIEW_POST_FAILED",
    "REVIEW_SENT",
    "SERVER_DEFAULT",
    "SHELL_CANCELLED",
    "SPOILERS_DISCORD_ONLY",
    "TEMPORARILY_UNAVAILABLE",
    "USAGE_CSV_FAILED",
    "USAGE_CSV_SENT",
    "WORKSPACE_DEFAULT",
    "admin_mistake_text",
    "admin_usage_error",
    "allowance_text",
    "backed_up_text",
    "block_added_text",
    "block_list_text",
    "block_removed_text",
    "cancel_refused_text",
    "channel_allowed_text",
    "channel_disallowed_text",
    "channels_list_text",
    "copied_text",
    "copy_columns_missing_text",
    "copy_failed_text",
    "copy_not_empty_text",
    "copy_source_version_text",
    "copy_table_missing_text",
    "count_amount_error",
    "database_newer_text",
    "database_path_text",
    "database_url_scheme_text",
    "describe",
    "format_eta",
    "format_reset",
    "healthcheck_unreachable_text",
    "help_text",
    "is_money_limit",
    "is_operator_fault",
    "job_details",
    "late_delivery_text",
    "limit_label",
    "limit_value_text",
    "migrated_text",
    "models_table",
    "moderation_log_text",
    "no_database_text",
    "not_in_channel_text",
    "operator_text",
    "option_refused_text",
    "out_directory_text",
    "postgres_unreachable_text",
    "progress_text",
    "prompt_too_long_to_check_text",
    "queue_text",
    "quota_cleared_text",
    "quota_set_text",
    "result_fields",
    "result_summary",
    "review_approved_delivery_text",
    "review_channel_text",
    "review_decided_text",
    "review_denied_text",
    "review_fields",
    "review_job_failed_text",
    "review_title",
    "save_failed_text",
    "server_required_text",
    "server_spend_cap_text",
    "spend_cap_text",
    "spoilers_text",
    "terminal_text",
    "unreachable_text",
    "usage_summary",
    "usd_amount_error",
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

# Why ``block add /regex/`` refused a pattern (RE2, the filter's engine, lacks these).
PATTERN_BACKREFERENCE = "a pattern cannot use back-references, like \\1"
PATTERN_LOOKAROUND = "a pattern cannot look ahead or behind, like (?=x), (?!x), (?<=x) or (?<!x)"
PATTERN_POSSESSIVE = (
    "a pattern cannot use possessive repeats or atomic groups, like a*+, a++ or (?>x)"
)
PATTERN_CONDITIONAL = "a pattern cannot use conditionals, like (?(1)a|b)"
PATTERN_UPPER_Z = "write \\z, not \\Z, for the end of the prompt"
PATTERN_TOO_COMPLEX = "that pattern is too complex to check quickly; use fewer or shorter repeats"
PATTERNS_TOO_COMPLEX = (
    "this server's patterns together would be too complex to check quickly; remove one first"
)


def prompt_too_long_to_check_text(length: int, limit: int) -> str:
    """Why a prompt too long for the filter was refused (an ``InvalidRequestError`` reason)."""
    return f"the prompt is {length} characters; at most {limit} can be checked"


def _minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


_LIMIT_LABELS: dict[str, str] = {
    LimitName.IMAGES_PER_DAY: "daily image limit",
    LimitName.IMAGES_PER_MONTH: "monthly image limit",
    LimitName.USD_MICROS_PER_MONTH: "monthly spending limit",
    LimitName.SERVER_USD_MICROS_PER_MONTH: "server's monthly spending cap",
}


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


def is_money_limit(name: str) -> bool:
    """Whether the limit spelt ``name`` counts micro-dollars (``False`` for other names)."""
    limit = LimitName.parse(name)
    return limit is not None and limit.is_money


def limit_value_text(name: str, value: int) -> str:
    """A limit's value as a table shows it: ``$1.50`` or ``20``."""
    return format_usd(value) if is_money_limit(name) else str(value)


def _amount(name: str, value: int) -> str:
    return limit_value_text(name, value) + (
        "" if is_money_limit(name) else f" image{'s' if value != 1 else ''}"
    )


def is_operator_fault(err: BaseException) -> bool:
    """Faults the user cannot fix: shown as "temporarily unavailable", logged in full."""
    return err.operator_fault if isinstance(err, BotError) else True


# What an error says: (the error, ``now``, how the platform shows a channel id) -> the text.
_Text = Callable[[Any, datetime | None, Callable[[str], str]], str]


def _text_for(table: Mapping[type[BaseException], _Text], err: BaseException) -> _Text | None:
    """The entry for the most specific class of ``err`` that ``table`` names."""
    return next((table[cls] for cls in type(err).__mro__ if cls in table), None)


def _quota_text(err: QuotaExceededError, now: datetime | None, _: object) -> str:
    limit = err.limit
    if limit.is_money:
        used = f"{format_usd(err.used)} of {format_usd(err.allowed)}"
    else:
        used = f"{err.used} of {_amount(limit, err.allowed)}"
    who = "This server has" if limit.scope is LimitScope.SERVER else "You have"
    return (
        f"{who} reached the {limit_label(err.limit)} ({used} used; this job "
        f"needs {_amount(err.limit, err.requested)}). It resets "
        f"{format_reset(err.resets_at, now)}. Nothing was charged."
    )


def _wait_text(err: ProviderWaitTooLongError, *_: object) -> str:
    minutes = _minutes(err.wait)
    return (
        f"The image service is rate-limited, try again in {minutes:,} "
        f"minute{'s' if minutes != 1 else ''}. Nothing was charged."
    )


def _too_many_text(err: TooManyJobsError, *_: object) -> str:
    return (
        f"You already have {err.limit} image job{'s' if err.limit != 1 else ''} on the way; "
        "wait for one to finish, then try again. Nothing was charged."
    )


def _channel_text(
    err: ChannelNotAllowedError, _: object, channel_label: Callable[[str], str]
) -> str:
    where = ", ".join(channel_label(c) for c in err.allowed_channel_ids)
    return f"Image generation isn't enabled in this channel; use {where}."


_TOOK_TOO_LONG = "The image service took too long to answer. Nothing was charged; please try again."

_DESCRIPTIONS: dict[type[BaseException], _Text] = {
    InvalidRequestError: lambda err, *_: f"Sorry, I can't draw that: {err.reason}.",
    QuotaExceededError: _quota_text,
    ContentRejectedError: lambda *_: (
        "The image service refused this prompt under its content policy. Nothing was "
        "charged; try rewording it."
    ),
    ProviderTimeoutError: lambda *_: _TOOK_TOO_LONG,
    JobTimeoutError: lambda *_: _TOOK_TOO_LONG,
    ProviderWaitTooLongError: _wait_text,
    ReviewNotYoursError: lambda *_: REVIEW_NOT_YOURS,
    PermissionDeniedError: lambda err, *_: f"Only admins can {err.action}.",
    DeliveryError: lambda *_: DELIVERY_FAILED,
    TooManyJobsError: _too_many_text,
    ServerBusyError: lambda err, *_: (
        f"This server already has {err.limit} image job{'s' if err.limit != 1 else ''} on "
        "the way; try again when one has finished. Nothing was charged."
    ),
    QueueFullError: lambda *_: (
        "I'm very busy right now and my queue is full. Nothing was charged; please try "
        "again in a few minutes."
    ),
    JobCancelledError: lambda *_: "Cancelled. Nothing was charged.",
    ShuttingDownError: lambda *_: (
        "I'm restarting, so this job was stopped before it ran. Nothing was charged; "
        "please try again in a minute."
    ),
    JobHandedOverError: lambda *_: (
        "I'm restarting; another instance of me is finishing this job and will post it here."
    ),
    PromptRefusedError: lambda *_: (
        "This prompt was refused by this server's rules. Nothing was charged."
    ),
    ChannelNotAllowedError: _channel_text,
    JobNotFoundError: lambda *_: (
        "I can't find that image job any more; start a new one with /imagine."
    ),
    DuplicateRequestError: lambda *_: "That request is already being handled.",
}


def describe(
    err: BaseException,
    *,
    now: datetime | None = None,
    channel_label: Callable[[str], str] = str,
) -> str:
    """One short message for the user about ``err``, saying what to do next; anything not
    named here (a provider fault, a bug) is ``TEMPORARILY_UNAVAILABLE``. ``channel_label``
    shows a channel id the platform's way (e.g. a link)."""
    text = _text_for(_DESCRIPTIONS, err)
    return TEMPORARILY_UNAVAILABLE if text is None else text(err, now, channel_label)


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
        if usage.name == LimitName.IMAGES_PER_DAY:
            return f"{usage.remaining} left today"
    for usage in allowance.limits:
        if usage.name == LimitName.IMAGES_PER_MONTH:
            return f"{usage.remaining} left this month"
    for usage in allowance.limits:
        if usage.name == LimitName.USD_MICROS_PER_MONTH:
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


# -- chat results with buttons (Discord embeds; reusable by any adapter) ----------------------

BUTTON_LABELS = {
    "reroll": "Reroll",
    "vary": "Variations",
    "details": "Details",
    "delete": "Delete",
    "cancel": "Cancel",
    "retry": "Try again",
}

ALREADY_WORKING = "Already working on it: that button was just pressed. Nothing more was charged."

INTERRUPTED_NOTICE = "This job was interrupted by a restart; nothing was charged."

DELETE_NOT_ALLOWED = (
    "Only the person who asked for these images, or a server admin, can delete them."
)


def progress_text(request: GenerationRequest, model_label: str) -> str:
    """Shown while a job runs: ``Generating 2 images with FLUX.1 [schnell] at 1024x1024…``."""
    images = f"{request.n} image{'s' if request.n != 1 else ''}"
    return f"Generating {images} with {model_label} at {request.size}…"


# -- the queue: position, ETA and Cancel ---------------------------------------------------------

GENERATING = "Generating your images…"

CANCEL_CONFIRMED = "Cancelled: the job left the queue and nothing was charged."

CANCEL_NOT_ALLOWED = "Only the person who asked for this job, or an admin, can cancel it."

CANCEL_TOO_LATE = "That job is no longer waiting in the queue (it has started or finished)."


def format_eta(seconds: float) -> str:
    """``about 20 s`` / ``about 3 min``: rounded, never below 1 s."""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    return f"about {max(1, round(seconds / 60))} min"


def queue_text(status: QueueStatus) -> str:
    """Shown while a job waits: ``Queued: 3 ahead of you, about 20 s``."""
    place = "you're next" if status.ahead <= 0 else f"{status.ahead} ahead of you"
    if status.eta_seconds is None:
        return f"Queued: {place}."
    return f"Queued: {place}, {format_eta(status.eta_seconds)}."


_CANCEL_REFUSALS: dict[type[BaseException], _Text] = {
    PermissionDeniedError: lambda *_: CANCEL_NOT_ALLOWED,
    InvalidRequestError: lambda *_: CANCEL_TOO_LATE,
    JobNotFoundError: lambda *_: CANCEL_TOO_LATE,
}


def cancel_refused_text(err: BaseException) -> str:
    """Why a Cancel click did nothing."""
    text = _text_for(_CANCEL_REFUSALS, err)
    return describe(err) if text is None else text(err, None, str)


def result_fields(result: GenerationResult) -> list[tuple[str, str]]:
    """Labelled facts about a delivered job (the prompt is shown apart)."""
    request = result.request
    fields = [("Model", result.model_label), ("Size", request.size)]
    fields.append(("Seed", str(result.seed) if result.seed is not None else "random"))
    fields.append(("Cost", "free (preview)" if result.preview else format_usd(result.cost_micros)))
    if result.allowance is not None:
        fields.append(("Quota left", _short_allowance(result.allowance) or "no limit"))
    return fields


_STATE_WORDS = {
    JobState.HELD: "in progress",
    JobState.CHARGED: "delivered",
    JobState.REFUNDED: "refunded",
}


def job_details(record: JobRecord, *, model_label: str, requester: str) -> list[tuple[str, str]]:
    """Every parameter of a job, to repeat it exactly; ``requester`` as the platform shows a
    user (e.g. a Discord mention)."""
    request = record.request
    state = _STATE_WORDS.get(record.state, str(record.state))
    if record.state is JobState.REFUNDED and record.refund_reason:
        state = f"{state} ({record.refund_reason})"
    cost = record.charged_micros if record.state is JobState.CHARGED else record.held_micros
    fields = [
        ("Prompt", request.prompt),
        ("Model", f"{model_label} (`{request.model}`)"),
        ("Size", request.size),
        ("Images", str(request.n)),
        ("Seed", str(request.seed) if request.seed is not None else "random"),
    ]
    if request.negative_prompt:
        fields.append(("Negative prompt", request.negative_prompt))
    fields += [
        ("Cost", format_usd(cost)),
        ("Status", state),
        ("Requested by", requester),
        ("Created", record.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("Job id", record.job_id),
    ]
    return fields


def late_delivery_text(mention: str, *, platform: str, reply_minutes: int) -> str:
    """Posted with a job that finished after the platform closed the original reply
    (``platform`` keeps one open ``reply_minutes``)."""
    return (
        f"{mention} here are your images. They took longer than {platform} keeps a reply open "
        f"({reply_minutes} minutes), so they are posted here instead."
    )


# -- delivery --------------------------------------------------------------------------------

REROLL_HINT = "Not quite it? Reroll draws the same prompt again with a new seed."

DELIVERY_FAILED = (
    "Your images were generated, but I could not post them here. Nothing was charged; "
    "please try again later."
)


def not_in_channel_text(invite: str) -> str:
    """The bot cannot post in the conversation the request came from; ``invite`` is how the
    platform adds it (e.g. Slack's ``/invite @bot``)."""
    return (
        f"I'm not a member of this channel, so I can't post images here. Add me with {invite} "
        "(or use a channel I'm in) and try again. Nothing was charged."
    )


# -- Slack admin commands (/imagine admin ...) ------------------------------------------------

WORKSPACE_DEFAULT = "the workspace default"

# What a member who is not an admin was refused ("Only admins can ...").
ADMIN_COMMANDS_ACTION = "use admin commands"

USAGE_CSV_SENT = "The full CSV is in your direct messages with me."

USAGE_CSV_FAILED = (
    "I could not send you the CSV as a direct message; check that the app's Messages tab is "
    "enabled, or export it with: imagine-bot usage"
)


def admin_usage_error(err: BaseException, *, hint: str = "") -> str:
    """A mistyped admin command (``InvalidRequestError``), followed by ``hint`` (where the
    platform's help is, e.g. Slack's help command); other errors as ``describe``."""
    if isinstance(err, InvalidRequestError):
        return f"{admin_mistake_text(err.reason)}{' ' + hint if hint else ''}"
    return describe(err)


def usd_amount_error(name: str, maximum: int) -> str:
    return (
        f"{name} must be an amount in USD from 0 to {maximum:,}"
        " with at most 6 decimals, e.g. 5 or 12.50"
    )


def count_amount_error(name: str, maximum: int) -> str:
    return f"{name} must be a whole number of images from 0 to {maximum:,}, e.g. 20"


def _limits_text(limits: Limits) -> str:
    parts = []
    if limits.images_per_day is not None:
        parts.append(f"{_amount(LimitName.IMAGES_PER_DAY, limits.images_per_day)} a day")
    if limits.images_per_month is not None:
        parts.append(f"{_amount(LimitName.IMAGES_PER_MONTH, limits.images_per_month)} a month")
    if limits.usd_micros_per_month is not None:
        parts.append(f"{format_usd(limits.usd_micros_per_month)} a month")
    return ", ".join(parts) if parts else "nothing set (the defaults apply)"


def quota_set_text(who: str, limits: Limits) -> str:
    """``who``: how the platform shows the user (a mention) or ``WORKSPACE_DEFAULT``."""
    return f"Limits for {who} are now: {_limits_text(limits)}."


def quota_cleared_text(who: str) -> str:
    return f"Limits for {who} cleared; the defaults apply."


def spend_cap_text(usd_micros: int | None, *, whose: str = "workspace's") -> str:
    if usd_micros is None:
        return f"The {whose} monthly spending cap is removed."
    return f"The {whose} monthly spending cap is now {format_usd(usd_micros)}."


def usage_summary(report: UsageReport, *, user_label: Callable[[str], str] = str) -> str:
    """Totals, then per user and per model, for an admin; ``user_label`` shows a user id the
    platform's way (e.g. a mention)."""
    since = report.since.astimezone(UTC).strftime("%Y-%m-%d")
    until = report.until.astimezone(UTC).strftime("%Y-%m-%d")
    lines = [
        f"Usage {since} to {until}: {_amount('images', report.total_images)}, "
        f"{format_usd(report.total_micros)}."
    ]
    by_user: dict[str, tuple[int, int]] = {}
    by_model: dict[str, tuple[int, int]] = {}
    for row in report.rows:
        images, micros = by_user.get(user_label(row.user_id), (0, 0))
        by_user[user_label(row.user_id)] = (images + row.images, micros + row.usd_micros)
        images, micros = by_model.get(row.model, (0, 0))
        by_model[row.model] = (images + row.images, micros + row.usd_micros)
    for title, totals in (("By user", by_user), ("By model", by_model)):
        if totals:
            ranked = sorted(totals.items(), key=lambda item: (-item[1][1], -item[1][0], item[0]))
            shown = ", ".join(
                f"{name} {images} ({format_usd(micros)})" for name, (images, micros) in ranked[:10]
            )
            more = f" and {len(ranked) - 10} more" if len(ranked) > 10 else ""
            lines.append(f"{title}: {shown}{more}")
    return "\n".join(lines)


# -- Discord admin commands (/imagine-admin ...) -------------------------------------------------

SERVER_DEFAULT = "the server default"
ADMIN_NO_LIMITS = "name at least one of images_per_day, images_per_month or usd_per_month"
ADMIN_USER_AND_ROLE = "choose a user or a role, not both (neither: the server default)"


_OPTION_WANTS = {
    "user": "a member of this server",
    "channel": "a text channel of this server",
    "role": "a role of this server",
    "mentionable": "a member or a role of this server",
    "number": "a number in the range offered",
    "integer": "a whole number in the range offered",
    "string": "one of the values offered",
    "attachment": "an image file",
}


def option_refused_text(option_type: str) -> str:
    """A slash-command option the platform sent but the bot cannot use (``option_type``:
    Discord's option type name, e.g. ``user``)."""
    wants = _OPTION_WANTS.get(option_type, "one of the values offered")
    return f"That {option_type} option can't be used: choose {wants}."


def admin_mistake_text(reason: str) -> str:
    return f"That admin command is not right: {reason}."


def server_spend_cap_text(usd_micros: int | None) -> str:
    """``spend_cap_text`` for a Discord server."""
    return spend_cap_text(usd_micros, whose="server's")


# -- moderation (issue 7): why a review cannot go ahead -------------------------------------

# Reasons of ``InvalidRequestError`` (shown as "Sorry, I can't draw that: <reason>.").
NO_REVIEW_CHANNEL = (
    "this server has no review channel yet, so there is no admin to ask; ask an admin to set "
    "one with the review-channel admin command"
)
REVIEW_ALREADY_REQUESTED = "you have already asked the admins about this prompt"
REVIEW_ALREADY_DECIDED = "an admin has already decided about this prompt"
REVIEW_NOT_REQUESTED = "nobody has asked for a review of this prompt yet"
REVIEW_NOT_FOUND = "I can't find that review any more"

REVIEW_NOT_YOURS = "Only the person whose prompt was refused can ask an admin about it."


# -- moderation on the chat platforms: review posts, decisions, admin commands ---------------

REVIEW_BUTTON_LABELS = {"ask": "Ask an admin", "approve": "Approve", "deny": "Deny"}

REVIEW_SENT = (
    "Sent to the admins for review. You'll be told here when they decide; nothing was charged."
)

REVIEW_POST_FAILED = (
    "I couldn't post in the admins' review channel, so nothing was sent. Please tell an admin; "
    "you can press the button again once it works."
)

SPOILERS_DISCORD_ONLY = "(Spoilers apply on Discord only; Slack shows images as usual.)"

_SOURCE_WORDS = {"filter": "the word filter", "moderation": "the moderation service"}


def review_title(review: Review) -> str:
    """The heading of a review post in the admins' channel."""
    source = _SOURCE_WORDS.get(review.source, review.source)
    return f"Review requested: a prompt refused by {source}"


def review_fields(review: Review, *, user: str, channel: str) -> list[tuple[str, str]]:
    """Labelled facts for the admins (the prompt is shown apart): ``user`` and ``channel`` as
    the platform shows them (mentions). The rule that matched is for admins only."""
    request = review.request
    fields = []
    if request.negative_prompt:
        fields.append(("Negative prompt", request.negative_prompt))
    images = f"{request.n} image{'s' if request.n != 1 else ''}"
    fields += [
        ("Requested by", user),
        ("Channel", channel),
        ("Matched", review.rule),
        ("Job", f"{images}, {request.model}, {request.size}"),
    ]
    return fields


def review_decided_text(approved: bool, admin: str) -> str:
    """Shown on the review post once an admin (``admin``, a mention) decided."""
    return f"{'Approved' if approved else 'Denied'} by {admin}."


def review_approved_delivery_text(mention: str) -> str:
    """Posted with the images of an approved review, in the channel the member asked in."""
    return f"{mention} an admin approved your prompt; here are your images."


def review_denied_text(mention: str) -> str:
    """Tells the member an admin denied their review (the prompt is not repeated)."""
    return (
        f"{mention} an admin looked at your refused prompt and did not approve it. Nothing "
        "was charged."
    )


def review_job_failed_text(reason: str) -> str:
    """For the approving admin, when the approved job could not run (``reason`` from
    ``describe``, as the member saw it)."""
    return f"Approved, but the job did not run: {reason}"


def block_added_text(value: str, *, pattern: bool, added: bool = True) -> str:
    what = "pattern" if pattern else "word"
    if not added:
        return f"That {what} was already blocked: {value}"
    return f"Blocked {what}: {value}. Prompts with it are refused from now on."


def block_removed_text(value: str, *, pattern: bool, removed: bool = True) -> str:
    what = "pattern" if pattern else "word"
    if not removed:
        return f"That {what} was not blocked on this server: {value}"
    return f"Unblocked {what}: {value}."


def block_list_text(rules: ServerRules) -> str:
    """A server's own blocked words and patterns (the built-in list always applies too)."""
    if not rules.blocked_terms and not rules.blocked_patterns:
        return "This server blocks no words or patterns of its own (the built-in list applies)."
    lines = []
    if rules.blocked_terms:
        lines.append("Blocked words: " + ", ".join(rules.blocked_terms))
    if rules.blocked_patterns:
        lines.append("Blocked patterns: " + ", ".join(f"/{p}/" for p in rules.blocked_patterns))
    lines.append("The built-in list applies too.")
    return "\n".join(lines)


def review_channel_text(where: str | None) -> str:
    """``where``: the channel as the platform shows it; ``None``: cleared."""
    if where is None:
        return "No review channel: refused members can no longer ask an admin."
    return f"Refused prompts that members ask about now go to {where} for review."


def channel_allowed_text(where: str, *, added: bool = True) -> str:
    if not added:
        return f"{where} was already allowed."
    return f"/imagine is allowed in {where}. With an allow-list, it works only in those channels."


def channel_disallowed_text(where: str, *, removed: bool = True) -> str:
    if not removed:
        return f"{where} was not on the allow-list."
    return f"{where} is off the allow-list (an empty list allows every channel)."


def channels_list_text(channels: Iterable[str]) -> str:
    """``channels`` as the platform shows them (mentions)."""
    shown = list(channels)
    if not shown:
        return "/imagine works in every channel (no allow-list)."
    return "/imagine works only in: " + ", ".join(shown)


def spoilers_text(on: bool) -> str:
    if on:
        return "Images are now posted as spoilers outside channels marked NSFW."
    return "Images are no longer posted as spoilers."


def moderation_log_text(
    entries: Iterable[ModerationEntry],
    *,
    days: int,
    user_label: Callable[[str], str] = str,
    channel_label: Callable[[str], str] = str,
    quote: Callable[[str], str] = str,
) -> str:
    """Refusals, newest first, for an admin: when, who, where, the prompt and what matched.
    ``quote`` makes what users typed safe for the platform (e.g. Slack escaping)."""
    rows = list(entries)
    span = f"{days} day{'s' if days != 1 else ''}"
    if not rows:
        return f"No prompts were refused in the last {span}."
    lines = [f"Refused prompts in the last {span} (newest first): {len(rows)}"]
    for entry in rows:
        stamp = entry.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
        prompt = entry.prompt if len(entry.prompt) <= 200 else entry.prompt[:199] + "…"
        where = channel_label(entry.channel_id) if entry.channel_id else "-"
        line = (
            f'{stamp} {user_label(entry.user_id)} in {where}: "{quote(prompt)}" '
            f"({entry.source}: {quote(entry.rule)})"
        )
        if entry.negative_prompt:
            line += f" [negative: {quote(entry.negative_prompt[:200])}]"
        lines.append(line)
    return "\n".join(lines)


# -- the terminal: the `imagine-bot` command and its shell ------------------------------------

NO_ADAPTERS_WAITING = (
    "No chat platform is configured: set DISCORD_TOKEN, or SLACK_BOT_TOKEN with SLACK_APP_TOKEN "
    "or SLACK_SIGNING_SECRET, in .env. Waiting instead of exiting, so that a restart policy "
    "does not start the bot over and over; fill in .env, then restart it (docker compose up -d)."
)

SHELL_CANCELLED = "Cancelled. Nothing was charged."

HEALTHCHECK_NO_PORT = (
    "HTTP_PORT is not set, so there is no /healthz to ask; set HTTP_PORT (the Docker image "
    "sets 8080)"
)


_TERMINAL_TEXTS: dict[type[BaseException], _Text] = {
    InvalidRequestError: lambda err, *_: f"{err.reason}.",
    PromptRefusedError: lambda err, *_: (
        f"This prompt was refused by {_SOURCE_WORDS.get(err.source, err.source)}. "
        "Nothing was charged."
    ),
}


def terminal_text(err: BaseException) -> str:
    """``describe`` for someone at a terminal: no chat persona and no server whose rules
    refused the prompt."""
    text = _text_for(_TERMINAL_TEXTS, err)
    return describe(err) if text is None else text(err, None, str)


def operator_text(err: BaseException) -> str:
    """``terminal_text`` for the operator running a one-off command: a fault shows its
    (key-free) detail, since they are the one to fix it."""
    if not is_operator_fault(err):
        return terminal_text(err)
    if isinstance(err, ProviderError | JobTimeoutError):
        return f"image API error: {err}"
    return str(err)


def _denied(err: OSError) -> bool:
    return err.errno in (errno.EACCES, errno.EPERM)


def _in_the_way(err: OSError) -> bool:
    return err.errno in (errno.ENOTDIR, errno.EEXIST)


def database_path_text(
    path: str, err: OSError, *, uid: int, is_file: bool = False, blocked_at: str | None = None
) -> str:
    """Why the database (``is_file``) or its directory cannot be used, and what to do; the
    Docker image runs as uid 10001, so a root-owned bind mount on ``/data`` lands here.
    ``blocked_at``: the existing directory in which ``path`` could not be created."""
    what = "database file" if is_file else "database directory"
    if _denied(err):
        where = path if blocked_at is None else blocked_at
        problem = f"the {what} {path} is not writable"
        if blocked_at is not None:
            problem = f"the {what} {path} cannot be created: {blocked_at} is not writable"
        return (
            f"{problem} by this user (uid {uid}); run chown {uid} {where}, or for a Docker "
            f"bind mount run chown {uid} on the host directory (e.g. chown {uid} ./data)"
        )
    if err.errno == errno.EROFS:
        return (
            f"the {what} {path} is on a read-only file system; point DATABASE_URL at a "
            "writable place (in Docker: sqlite:////data/imagine.db on a volume)"
        )
    if _in_the_way(err):
        return f"the {what} {path} cannot be created: a file is in the way; fix DATABASE_URL"
    return f"the {what} {path} cannot be used ({err.strerror or err}); fix DATABASE_URL"


# --- db migrate, db copy, db backup (``bot.store.copy``, ``adapters.shell.database``) -------

COPY_IN_MEMORY = (
    "an in-memory database (sqlite://:memory:) has nothing to copy or keep; give a file, "
    "e.g. sqlite:///data/imagine.db"
)


def database_url_scheme_text(scheme: str) -> str:
    return f"a database URL starts with sqlite:// or postgresql:// (got a {scheme} URL)"


def no_database_text(path: str) -> str:
    return f"there is no database at {path}; check the path (sqlite:///relative or sqlite:////abs)"


def copy_not_empty_text(location: str, table: str, count: int) -> str:
    """A second copy into the same database, or a copy into one already in use."""
    what = f"{count} job(s)" if table == "jobs" else f"{count} row(s) in {table}"
    return (
        f"{location} already holds {what}; db copy only fills a new, empty database "
        "(nothing was copied)"
    )


def copy_source_version_text(location: str, found: int, latest: int) -> str:
    if found > latest:
        return f"{location}: {database_newer_text(found, latest)} (nothing was copied)"
    return (
        f"{location} is at schema version {found}, this imagine-bot copies version {latest}: "
        f"run imagine-bot db migrate --url <its DATABASE_URL> first (nothing was copied)"
    )


def copy_table_missing_text(table: str, location: str) -> str:
    return f"{location} has no table {table}; is it an imagine-bot database? (nothing was copied)"


def copy_columns_missing_text(table: str, columns: Iterable[str], location: str) -> str:
    names = ", ".join(columns)
    return (
        f"{location} has no column(s) {names} in {table}; migrate it with the same "
        "imagine-bot as the source (nothing was copied)"
    )


def copy_failed_text(table: str, location: str, reason: str) -> str:
    return f"copying {table} into {location} failed: {reason} (nothing was copied)"


def copied_text(source: str, target: str, total: int) -> str:
    return f"copied {total} row(s) from {source} to {target}"


def migrated_text(location: str, found: int, reached: int) -> str:
    if found == reached:
        return f"{location}: schema version {reached}, already current"
    return f"{location}: schema version {found} -> {reached}"


def backed_up_text(location: str, target: str, size: int) -> str:
    return f"backed up {location} to {target} ({size} bytes)"


def out_directory_text(path: str, err: OSError, *, uid: int) -> str:
    """``--out`` cannot take the images; said before anything is generated or charged."""
    if _denied(err):
        return (
            f"the output directory {path} is not writable by this user (uid {uid}); choose "
            "another with --out"
        )
    if err.errno == errno.EROFS:
        return (
            f"the output directory {path} is on a read-only file system; choose another with --out"
        )
    if _in_the_way(err):
        return f"--out {path} is not a directory (a file is in the way); choose a directory"
    return f"the output directory {path} cannot be used ({err.strerror or err}); choose another"


def save_failed_text(path: str, err: OSError) -> str:
    return (
        f"the images were generated (and charged) but could not be saved in {path} "
        f"({err.strerror or err})"
    )


def server_required_text(platform: str) -> str:
    """``quota ... --platform discord|slack`` without ``--server``."""
    if platform == "slack":
        return (
            "--server is required with --platform slack: the workspace (team) id, e.g. "
            "--server T0123ABC"
        )
    return (
        f"--server is required with --platform {platform}: the server (guild) id, e.g. "
        "--server 123456789012345678 (Developer Mode on, right-click the server, Copy Server ID)"
    )


def unreachable_text(service: str, url: str, err: BaseException, variable: str) -> str:
    """A platform that does not answer at start-up (no network, a wrong URL)."""
    return (
        f"cannot reach {service} at {url} ({type(err).__name__}); check {variable} and the network"
    )


def healthcheck_unreachable_text(url: str, reason: str) -> str:
    return f"nothing answers at {url} ({reason}); is imagine-bot run up, on this HTTP_PORT?"


POSTGRES_DRIVER_MISSING = (
    "DATABASE_URL is a PostgreSQL URL but asyncpg is not installed: "
    "pip install 'imagine-bot[postgres]'"
)


def postgres_unreachable_text(host: str, port: int, database: str, reason: str) -> str:
    """Why the PostgreSQL server of ``DATABASE_URL`` could not be used; never its password."""
    return (
        f"cannot connect to PostgreSQL at {host}:{port} (database {database}): {reason}; "
        "check DATABASE_URL and that the server is running"
    )


def database_newer_text(found: int, supported: int) -> str:
    return (
        f"the database is at schema version {found}, newer than this imagine-bot "
        f"(version {supported}); upgrade imagine-bot or restore a backup"
    )

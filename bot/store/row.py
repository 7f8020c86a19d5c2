"""Encoding shared by every backend's stores (the ledger and the moderation store, on SQLite
or PostgreSQL): timestamps as fixed-width UTC ISO strings, the requester and request columns
every job-like row has, and the models read back from the rows both backends select in the
same column order (``JOB_COLUMNS``, ``REVIEW_COLUMNS``, ``MODERATION_LOG_COLUMNS``).

A row is read by position, so it may be a tuple (aiosqlite) or an ``asyncpg.Record``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.models import (
    GenerationRequest,
    JobRecord,
    JobState,
    Limits,
    ModerationEntry,
    Requester,
    Review,
    ReviewState,
)

__all__ = [
    "JOB_COLUMNS",
    "MODERATION_LOG_COLUMNS",
    "REVIEW_COLUMNS",
    "job_record",
    "limits_from_row",
    "moderation_entry",
    "parse_stamp",
    "request_from_row",
    "requester_from_row",
    "review_from_row",
    "role_ids_text",
    "stamp",
]

JOB_COLUMNS = """
    job_id, event_id, platform, workspace_id, channel_id, user_id, role_ids, display_name,
    prompt, model, size, n, seed, negative_prompt, state, held_images, held_micros,
    charged_images, charged_micros, created_at, finished_at, refund_reason
"""

REVIEW_COLUMNS = """
    review_id, platform, workspace_id, channel_id, user_id, role_ids, display_name, prompt,
    negative_prompt, model, size, n, seed, source, rule, state, created_at, decided_by,
    decided_at
"""

MODERATION_LOG_COLUMNS = """
    at, platform, workspace_id, channel_id, user_id, prompt, negative_prompt, source, rule,
    review_id
"""


def stamp(moment: datetime) -> str:
    """Fixed width, always UTC: these strings sort in time order."""
    if moment.tzinfo is None:
        raise ValueError("times must be aware datetimes (UTC)")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _parse_optional(text: str | None) -> datetime | None:
    return None if text is None else parse_stamp(text)


def role_ids_text(role_ids: Iterable[str]) -> str:
    """The JSON list a row stores its requester's roles in (``requester_from_row`` reads it)."""
    return json.dumps(list(role_ids))


def requester_from_row(
    platform: str,
    workspace_id: str,
    channel_id: str,
    user_id: str,
    role_ids: str,
    display_name: str,
) -> Requester:
    """``role_ids`` is the JSON list stored with the row. Admin rights are never stored: they
    are checked again from the platform whenever they matter."""
    return Requester(
        platform=platform,
        workspace_id=workspace_id,
        channel_id=channel_id,
        user_id=user_id,
        role_ids=tuple(json.loads(role_ids)),
        display_name=display_name,
    )


def request_from_row(
    prompt: str, model: str, size: str, n: int, seed: int | None, negative_prompt: str | None
) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt, model=model, size=size, n=n, seed=seed, negative_prompt=negative_prompt
    )


def job_record(row: Sequence[Any]) -> JobRecord:
    """A row of ``JOB_COLUMNS``."""
    (
        job_id,
        event_id,
        platform,
        workspace_id,
        channel_id,
        user_id,
        role_ids,
        display_name,
        prompt,
        model,
        size,
        n,
        seed,
        negative_prompt,
        state,
        held_images,
        held_micros,
        charged_images,
        charged_micros,
        created_at,
        finished_at,
        refund_reason,
    ) = row
    return JobRecord(
        job_id=job_id,
        requester=requester_from_row(
            platform, workspace_id, channel_id, user_id, role_ids, display_name
        ),
        request=request_from_row(prompt, model, size, n, seed, negative_prompt),
        state=JobState(state),
        held_micros=held_micros,
        held_images=held_images,
        charged_micros=charged_micros,
        charged_images=charged_images,
        created_at=parse_stamp(created_at),
        finished_at=_parse_optional(finished_at),
        event_id=event_id,
        refund_reason=refund_reason,
    )


def review_from_row(row: Sequence[Any]) -> Review:
    """A row of ``REVIEW_COLUMNS``."""
    (
        review_id,
        platform,
        workspace_id,
        channel_id,
        user_id,
        role_ids,
        display_name,
        prompt,
        negative_prompt,
        model,
        size,
        n,
        seed,
        source,
        rule,
        state,
        created_at,
        decided_by,
        decided_at,
    ) = row
    return Review(
        review_id=review_id,
        requester=requester_from_row(
            platform, workspace_id, channel_id, user_id, role_ids, display_name
        ),
        request=request_from_row(prompt, model, size, n, seed, negative_prompt),
        rule=rule,
        source=source,
        state=ReviewState(state),
        created_at=parse_stamp(created_at),
        decided_by=decided_by,
        decided_at=_parse_optional(decided_at),
    )


def moderation_entry(row: Sequence[Any]) -> ModerationEntry:
    """A row of ``MODERATION_LOG_COLUMNS``."""
    at, platform, workspace_id, channel_id, user_id, prompt, negative, source, rule, review = row
    return ModerationEntry(
        at=parse_stamp(at),
        platform=platform,
        workspace_id=workspace_id,
        channel_id=channel_id,
        user_id=user_id,
        prompt=prompt,
        negative_prompt=negative,
        source=source,
        rule=rule,
        review_id=review,
    )


def limits_from_row(row: Sequence[Any]) -> Limits:
    """The columns ``images_per_day, images_per_month, usd_micros_per_month``, in that order."""
    day, month, usd = row
    return Limits(images_per_day=day, images_per_month=month, usd_micros_per_month=usd)

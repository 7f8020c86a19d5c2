"""Encoding shared by the SQLite stores (the ledger and the moderation store): timestamps as
fixed-width UTC ISO strings, and the requester and request columns every job-like row has."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bot.models import GenerationRequest, Requester

__all__ = ["parse_stamp", "request_from_row", "requester_from_row", "stamp"]


def stamp(moment: datetime) -> str:
    """Fixed width, always UTC: these strings sort in time order."""
    if moment.tzinfo is None:
        raise ValueError("times must be aware datetimes (UTC)")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


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

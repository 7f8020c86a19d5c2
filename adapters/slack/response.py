"""Posting to a ``response_url``: the one way every Slack part answers a command or a click
privately without the bot being a member of the conversation."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.webhook.async_client import AsyncWebhookClient

__all__ = ["respond"]

log = logging.getLogger(__name__)


async def respond(
    session: aiohttp.ClientSession,
    url: str,
    text: str,
    *,
    blocks: list[dict[str, Any]] | None = None,
    replace_original: bool | None = None,
    delete_original: bool | None = None,
) -> bool:
    """Post an ephemeral ``text`` (already escaped or mrkdwn) to ``url``; False when Slack
    did not take it (``respond()`` never raises for a status), so the caller can fall back."""
    webhook = AsyncWebhookClient(url=url, session=session)
    try:
        response = await webhook.send(
            text=text,
            blocks=blocks,
            response_type="ephemeral",
            replace_original=replace_original,
            delete_original=delete_original,
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("response_url failed (%s)", exc)
        return False
    if response.status_code != 200:
        log.warning("response_url answered %d", response.status_code)
        return False
    return True

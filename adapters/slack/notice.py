"""After a restart: the member's "Generating…" or "Queued" note becomes "This job was
interrupted by a restart; nothing was charged." with a Try again button.

The job's ``reach`` (``reach`` below) holds the slash command's ``response_url``, which
replaces the note for 30 minutes (and five posts); otherwise, or once it no longer works, the
notice is a new ephemeral message to the member where the job was asked for.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import Origin, button_section, escape
from adapters.slack.response import respond
from bot.messages import BUTTON_LABELS, INTERRUPTED_NOTICE
from bot.store.ledger import Interrupted

__all__ = ["RETRY_ACTION_ID", "reach", "retry_blocks", "tell_interrupted"]

log = logging.getLogger(__name__)

RETRY_ACTION_ID = "imagine_retry"


def reach(origin: Origin) -> dict[str, str]:
    """What another process needs to tell the member about this job after a restart."""
    found = {"channel": origin.channel_id, "user": origin.user_id}
    if origin.response_url and not origin.interactive and origin.note_thread_ts is None:
        found["response_url"] = origin.response_url  # the note went there: replace it
    if origin.note_thread_ts:
        found["thread"] = origin.note_thread_ts
    if origin.thread_ts:
        found["post_thread"] = origin.thread_ts  # where results go (a mention's own thread)
    return found


def retry_blocks(text: str, job_id: str) -> list[dict[str, Any]]:
    return button_section(
        "imagine_interrupted",
        escape(text),
        action_id=RETRY_ACTION_ID,
        label=BUTTON_LABELS["retry"],
        value=job_id,
        style="primary",
    )


async def tell_interrupted(
    client: AsyncWebClient, session: aiohttp.ClientSession, notice: Interrupted
) -> bool:
    where = notice.reach
    blocks = retry_blocks(INTERRUPTED_NOTICE, notice.record.job_id)
    url = where.get("response_url")
    if url and await respond(
        session, url, escape(INTERRUPTED_NOTICE), blocks=blocks, replace_original=True
    ):
        return True
    try:
        await client.chat_postEphemeral(
            channel=where.get("channel") or notice.record.requester.channel_id,
            user=where.get("user") or notice.record.requester.user_id,
            text=escape(INTERRUPTED_NOTICE),
            blocks=blocks,
            thread_ts=where.get("thread"),
        )
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("job %s: could not tell its member (%s)", notice.record.job_id, exc)
        return False
    return True

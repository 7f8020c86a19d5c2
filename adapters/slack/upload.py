"""What the bot posts publicly: a result's images, the Reroll button under them, and an
admin's usage CSV (in their DM)."""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import Origin, file_uploads, initial_comment, reroll_blocks
from bot.admin import csv_name, to_csv
from bot.messages import REROLL_HINT
from bot.models import GenerationResult, UsageReport

__all__ = ["post_reroll_button", "upload_images", "upload_usage_csv"]

log = logging.getLogger(__name__)


async def upload_images(client: AsyncWebClient, result: GenerationResult, origin: Origin) -> None:
    """Into the channel (or thread) with the details as the initial comment; Slack's and
    the network's errors are the caller's to turn into a ``DeliveryError``."""
    await client.files_upload_v2(
        file_uploads=file_uploads(result),
        channel=origin.channel_id,
        initial_comment=initial_comment(result, user_id=origin.user_id),
        thread_ts=origin.thread_ts,
    )


async def post_reroll_button(client: AsyncWebClient, origin: Origin, job_id: str) -> None:
    """A message of its own, since an upload cannot carry blocks. Its appearance means the
    job is complete and charged."""
    try:
        await client.chat_postMessage(
            channel=origin.channel_id,
            thread_ts=origin.thread_ts,
            text=REROLL_HINT,
            blocks=reroll_blocks(job_id),
        )
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        # The images are delivered; only the button is missing.
        log.warning("job %s: could not post the Reroll button: %s", job_id, exc)


async def upload_usage_csv(
    client: AsyncWebClient, user_id: str, report: UsageReport, *, comment: str
) -> bool:
    """The report as a CSV file in the member's DM with the bot; False when it failed."""
    filename = csv_name(report)
    try:
        opened = await client.conversations_open(users=user_id)
        dm = str((opened.get("channel") or {}).get("id") or "")
        await client.files_upload_v2(
            channel=dm,
            content=to_csv(report).encode(),
            filename=filename,
            title=filename,
            initial_comment=comment,
        )
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("could not send the usage CSV to %s: %s", user_id, exc)
        return False
    return True

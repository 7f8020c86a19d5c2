"""Answering on Slack about a job another bot process accepted (``bot.courier``).

This process never saw the member's command, only the job's ``reach``
(``adapters.slack.notice.reach``): the result is uploaded with the bot token as a normal
delivery is (``SlackChat.deliver``), into the channel or the thread the command came from,
followed by the Reroll button; the member's "Queued" / "Generating…" note is then removed
through the command's ``response_url`` while Slack still takes it.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping

from adapters.slack.chat import SlackChat
from adapters.slack.failure import tell_failure
from adapters.slack.render import Origin
from adapters.slack.response import respond
from adapters.slack.upload import post_reroll_button
from bot.errors import BotError
from bot.models import GenerationResult, JobRecord

__all__ = ["RESPONSE_URL_LIFE", "SlackCourier"]

log = logging.getLogger(__name__)

# How long Slack takes posts on a command's response_url, less a margin for the clock.
RESPONSE_URL_LIFE = datetime.timedelta(minutes=30) - datetime.timedelta(seconds=30)


class SlackCourier:
    """Works through the adapter's one ``SlackChat`` (the bot token's Web API client)."""

    def __init__(self, chat: SlackChat) -> None:
        self.chat = chat

    async def deliver(
        self, record: JobRecord, reach: Mapping[str, str], result: GenerationResult
    ) -> None:
        """A failed upload tells the member and raises ``DeliveryError`` (``SlackChat``)."""
        origin = _origin(record, reach)
        await self.chat.deliver(result, origin)
        url = origin.response_url
        if url and not await respond(self.chat.session, url, "", delete_original=True):
            log.info("job %s: its queue note could not be removed", record.job_id)
        await post_reroll_button(self.chat.client, origin, result.job_id)

    async def fail(self, record: JobRecord, reach: Mapping[str, str], error: BotError) -> None:
        """An ephemeral message to the member where they asked (``chat.postEphemeral``)."""
        # Without the response_url: it would replace nothing, and may have expired.
        origin = _origin(record, reach, note=False)
        await tell_failure(self.chat, origin, error)


def _origin(record: JobRecord, reach: Mapping[str, str], *, note: bool = True) -> Origin:
    """Where the job's answers go, from its ``reach``; with ``note``, the command's
    ``response_url`` while Slack still takes it (30 minutes from the command)."""
    requester = record.requester
    url = reach.get("response_url") or None
    age = datetime.datetime.now(datetime.UTC) - record.created_at
    note_thread = reach.get("thread") or None
    return Origin(
        team_id=requester.workspace_id,
        channel_id=reach.get("channel") or requester.channel_id,
        user_id=reach.get("user") or requester.user_id,
        user_name=requester.display_name,
        thread_ts=reach.get("post_thread") or note_thread,
        note_thread_ts=note_thread,
        response_url=url if note and age < RESPONSE_URL_LIFE else None,
    )

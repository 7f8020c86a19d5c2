"""A job's ephemeral note on Slack: its place in the queue with a Cancel button while it waits,
"Generating…" once it runs, and the Cancel click.

The note is the requester's alone (ephemeral). A slash command's note goes through the
command's ``response_url``, and later changes replace it (``replace_original``); Slack takes
at most ``RESPONSE_URL_POSTS`` posts on one URL, so queue updates stop early enough to leave
room for the switch to running and for the outcome. Other notes (a mention's, a Reroll
click's) are posted once and not updated: ``chat.postEphemeral`` messages cannot be edited,
and a click's ``response_url`` would replace the public message that was clicked. The
Cancel button's value is the job id, so a click is understood after a restart too.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackClientError

from adapters.progress import StatusFeed
from adapters.slack.chat import SlackChat
from adapters.slack.render import Origin, button_section, escape
from adapters.slack.response import respond
from bot.errors import BotError, JobCancelledError, PermissionDeniedError
from bot.messages import BUTTON_LABELS, cancel_refused_text, describe, queue_text
from bot.models import QueueStatus

__all__ = [
    "CANCEL_ACTION_ID",
    "RESPONSE_URL_POSTS",
    "QueueNote",
    "QueueNotes",
    "queue_blocks",
]

log = logging.getLogger(__name__)

CANCEL_ACTION_ID = "imagine_cancel"
RESPONSE_URL_POSTS = 5  # what Slack accepts on one response_url (within 30 minutes)


def queue_blocks(text: str, job_id: str) -> list[dict[str, Any]]:
    """The queued note: its text with a Cancel button whose value is the job id."""
    return button_section(
        "imagine_queue",
        escape(text),
        action_id=CANCEL_ACTION_ID,
        label=BUTTON_LABELS["cancel"],
        value=job_id,
        style="danger",
    )


class QueueNote:
    """One job's note. ``feed`` is the ``progress`` callback for ``ImageService.generate``;
    ``close`` it before the job's outcome is posted."""

    def __init__(
        self,
        notes: QueueNotes,
        origin: Origin,
        *,
        running_text: str,
    ) -> None:
        self.notes = notes
        self.origin = origin
        self.running_text = running_text
        self.feed = StatusFeed(self._show)
        # A Cancel click is answering for this job: its outcome is posted by the click.
        self.cancel_claimed = False
        self._job_id: str | None = None
        self._posted = False
        self._via_url = False  # posted through the command's response_url
        self._posts = 0  # posts made to that response_url
        self._offers_cancel = False

    @property
    def replaceable(self) -> bool:
        """Whether later changes can replace the note (a slash command's response_url)."""
        return self._via_url and not self.origin.interactive

    async def _show(self, status: QueueStatus) -> None:
        if self._job_id is None:
            self._job_id = status.job_id
            self.notes.board[status.job_id] = self
        if status.running:
            text, blocks = self.running_text, None
        else:
            text = queue_text(status)
            blocks = queue_blocks(text, status.job_id)
        if not self._posted:
            await self._post(text, blocks)
            return
        # Keep one post for the outcome and, while queued, one for the switch to running.
        spare = RESPONSE_URL_POSTS - self._posts - (1 if status.running else 2)
        if self.replaceable and spare > 0 and await self._respond(text, blocks, replace=True):
            self._offers_cancel = blocks is not None

    async def _post(self, text: str, blocks: list[dict[str, Any]] | None) -> None:
        self._posted = True
        origin = self.origin
        if origin.response_url and origin.note_thread_ts is None:
            replace = False if origin.interactive else None
            if await self._respond(text, blocks, replace=replace):
                self._via_url = True
                self._offers_cancel = blocks is not None
                return
        try:
            await self.notes.chat.client.chat_postEphemeral(
                channel=origin.channel_id,
                user=origin.user_id,
                text=escape(text),
                blocks=blocks,
                thread_ts=origin.note_thread_ts,
            )
            self._offers_cancel = blocks is not None
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not show %s the job's progress: %s", origin.user_id, exc)

    async def _respond(
        self, text: str, blocks: list[dict[str, Any]] | None, *, replace: bool | None
    ) -> bool:
        url = self.origin.response_url
        if not url:
            return False
        self._posts += 1
        return await respond(
            self.notes.chat.session, url, escape(text), blocks=blocks, replace_original=replace
        )

    async def close(self, *, flush: bool = False) -> None:
        """Stop updating the note; with ``flush``, post it now if it was never shown, or
        switch it to running if that is pending."""
        await self.feed.close(flush=flush)
        if self._job_id is not None and self.notes.board.get(self._job_id) is self:
            del self.notes.board[self._job_id]

    async def settle(self, text: str) -> bool:
        """Replace a note that still offers Cancel with the job's outcome ``text``. False
        when that cannot be done: the caller tells the requester the usual way."""
        await self.close()
        if not (self._offers_cancel and self.replaceable and self._posts < RESPONSE_URL_POSTS):
            return False
        if await self._respond(text, None, replace=True):
            self._offers_cancel = False
            return True
        return False


class QueueNotes:
    """The notes of the jobs this process is running, by job id, and the Cancel click."""

    def __init__(self, chat: SlackChat) -> None:
        self.chat = chat
        self.board: dict[str, QueueNote] = {}

    def note(self, origin: Origin, *, running_text: str) -> QueueNote:
        return QueueNote(self, origin, running_text=running_text)

    async def cancel(self, job_id: str, origin: Origin) -> None:
        """A Cancel click: the requester (or an admin) takes a queued job out of the queue.
        The clicked note becomes "Cancelled. Nothing was charged."; a refusal is a new
        ephemeral message to the clicker."""
        note = self.board.get(job_id)
        if note is not None:
            note.cancel_claimed = True
        try:
            try:
                await self.chat.service.cancel(job_id, origin.requester())
            except PermissionDeniedError:
                # Only now ask Slack whether the clicker is an admin (users.info).
                if not await self.chat.is_admin(origin):
                    raise
                await self.chat.service.cancel(job_id, origin.requester(is_admin=True))
        except BotError as err:
            if note is not None:
                note.cancel_claimed = False
            log.info("job %s: cancel by %s refused: %s", job_id, origin.user_id, type(err).__name__)
            await self.chat.tell(origin, cancel_refused_text(err))
            return
        log.info("job %s: cancelled by %s", job_id, origin.user_id)
        text = describe(JobCancelledError(job_id))
        if not await self._replace_clicked(origin, text):
            await self.chat.tell(origin, text)

    async def _replace_clicked(self, origin: Origin, text: str) -> bool:
        """The click's response_url replaces the note the button was on."""
        if not origin.response_url:
            return False
        return await respond(
            self.chat.session, origin.response_url, escape(text), replace_original=True
        )

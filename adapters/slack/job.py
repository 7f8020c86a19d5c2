"""Running a member's job on Slack: a new prompt, a Reroll (a new seed) or a Try again (an
interrupted job as it was), with its queue note, the upload and then the Reroll button."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from adapters.slack.chat import SlackChat
from adapters.slack.failure import tell_failure
from adapters.slack.notice import reach
from adapters.slack.progress import QueueNote, QueueNotes
from adapters.slack.render import Origin
from adapters.slack.upload import post_reroll_button
from bot.errors import BotError, DuplicateRequestError, JobCancelledError
from bot.messages import ALREADY_WORKING, describe, progress_text
from bot.models import GenerationRequest, GenerationResult
from bot.service import Deliver

__all__ = ["JobRunner"]

log = logging.getLogger(__name__)

# ImageService.generate, .reroll or .retry with its job named (functools.partial).
JobStart = Callable[..., Awaitable[GenerationResult]]


class JobRunner:
    """Starts jobs for acknowledged requests and tells the member how they went."""

    def __init__(self, chat: SlackChat, notes: QueueNotes) -> None:
        self.chat = chat
        self.notes = notes

    async def imagine(self, text: str, origin: Origin, event_id: str | None) -> None:
        chat, service = self.chat, self.chat.service
        try:
            request = service.parse(text)
        except BotError as err:
            await chat.tell(origin, describe(err))
            return
        await self._start(origin, request, functools.partial(service.generate, request), event_id)

    async def reroll(
        self, job_id: str, origin: Origin, event_id: str | None, *, again: bool = False
    ) -> None:
        """Reroll (a new seed), or with ``again`` Try again (the interrupted job as it was)."""
        chat, service = self.chat, self.chat.service
        action = "retry" if again else "reroll"
        try:
            record = await service.job(job_id)
            first = await service.first_click(origin.requester(), action, job_id)
        except BotError as err:
            await tell_failure(chat, origin, err)
            return
        if not first:
            log.info("job %s: repeated %s click by %s ignored", job_id, action, origin.user_id)
            await chat.tell(origin, ALREADY_WORKING)
            return
        start = functools.partial(service.retry if again else service.reroll, job_id)
        await self._start(origin, record.request, start, event_id)

    async def _start(
        self, origin: Origin, request: GenerationRequest, start: JobStart, event_id: str | None
    ) -> None:
        """Run ``start`` (the service call with its job named) for ``origin``, with its queue
        note, once the bot may post in the channel."""
        chat = self.chat
        if not await chat.can_post(origin):
            await chat.tell(origin, chat.not_in_channel(), markup=True)
            return
        note = self.notes.note(origin, running_text=self._generating(request))
        job = start(
            origin.requester(),
            event_id=event_id,
            deliver=self._deliverer(origin, note),
            progress=note.feed,
            reach=reach(origin),
        )
        await self._run(origin, job, note)

    def _deliverer(self, origin: Origin, note: QueueNote) -> Deliver:
        async def deliver(result: GenerationResult) -> None:
            await note.close(flush=True)  # the note comes before the images
            await self.chat.deliver(result, origin)

        return deliver

    async def _run(self, origin: Origin, job: Awaitable[GenerationResult], note: QueueNote) -> None:
        """Await a job whose upload is part of it (the service charges only after it), then
        post the Reroll button: its appearance means the job is complete and charged.
        ``note`` shows the job's progress until then."""
        chat = self.chat
        try:
            try:
                result = await job
            finally:
                await note.close(flush=True)
        except JobCancelledError as err:
            if not note.cancel_claimed:  # else the Cancel click answered
                await tell_failure(chat, origin, err, note)
            return
        except DuplicateRequestError as dup:
            log.info("event already handled by job %s; nothing more to do", dup.job_id)
            return
        except BotError as err:
            await tell_failure(chat, origin, err, note)
            return
        except Exception as exc:
            log.exception("Slack job failed unexpectedly")
            await tell_failure(chat, origin, exc, note)
            return
        await post_reroll_button(chat.client, origin, result.job_id)

    def _generating(self, request: GenerationRequest) -> str:
        spec = self.chat.service.catalog.get(request.model)
        return progress_text(request, spec.label)

"""One generation for an interaction already deferred, from the queue to the answer: the
loading message shows the job's place in the queue with a Cancel button, then the result, a
refusal with "Ask an admin", or the error. Used by ``/imagine`` and by the buttons that start
a job again (Reroll, Variations, Try again)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Protocol

import discord

from adapters.discord.moderation import tell_refused
from adapters.discord.progress import QueueNote
from adapters.discord.render import PLATFORM, to_requester
from adapters.discord.reply import Reply, reach
from bot.errors import (
    BotError,
    DuplicateRequestError,
    JobCancelledError,
    PromptRefusedError,
)
from bot.event_key import platform_event
from bot.messages import GENERATING
from bot.models import GenerationResult, Requester
from bot.service import Deliver, Progress

__all__ = ["JobStarter", "run_job"]

log = logging.getLogger(__name__)


class JobStarter(Protocol):
    """Starts the job for the requester, e.g. ``functools.partial(service.generate, request)``:
    the service calls ``deliver`` before charging and ``progress`` with the job's place in the
    queue; ``reach`` is what another process needs to tell the member after a restart."""

    def __call__(
        self,
        requester: Requester,
        /,
        *,
        event_id: str,
        deliver: Deliver,
        progress: Progress,
        reach: Mapping[str, str],
    ) -> Awaitable[GenerationResult]: ...


async def run_job(
    interaction: discord.Interaction,
    reply: Reply,
    start: JobStarter,
    *,
    progress: str | None = None,
) -> None:
    """Run one generation for an interaction already deferred, then answer it. While the job
    waits, the loading message shows its place in the queue with a Cancel button; once it
    runs, ``progress`` (a generic line by default). Only unexpected exceptions escape, to
    the tree's error hook."""
    requester = to_requester(interaction)
    feedback = QueueNote(reply, running_text=progress or GENERATING)

    async def deliver(result: GenerationResult) -> None:
        await feedback.close()  # no queue update may land on the result
        await reply.deliver(result)

    try:
        try:
            await start(
                requester,
                event_id=platform_event(PLATFORM, str(interaction.id)),
                deliver=deliver,
                progress=feedback.feed,
                reach=reach(interaction, reply),
            )
        finally:
            await feedback.close()
    except DuplicateRequestError as err:
        log.info(
            "interaction %s was delivered twice; job %s handles it", interaction.id, err.job_id
        )
    except JobCancelledError as err:
        await feedback.cancelled(err)
    except PromptRefusedError as err:
        await tell_refused(reply, err)  # privately, with an "Ask an admin" button
    except BotError as err:
        await reply.fail(err)

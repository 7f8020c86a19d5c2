"""One generation for an interaction already deferred, from the queue to the answer: the
loading message shows the job's place in the queue with a Cancel button, then the result, a
refusal with "Ask an admin", or the error. Used by ``/imagine`` and by the buttons that start
a job again (Reroll, Variations, Try again)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import discord

from adapters.discord.moderation import tell_refused
from adapters.discord.progress import QueueFeedback
from adapters.discord.render import to_requester
from adapters.discord.reply import Reply, reach
from bot.errors import (
    BotError,
    DeliveryError,
    DuplicateRequestError,
    JobCancelledError,
    PromptRefusedError,
)
from bot.messages import GENERATING
from bot.models import GenerationResult, Requester
from bot.service import Deliver, Progress

__all__ = ["JobStarter", "run_job"]

log = logging.getLogger(__name__)

# Starts the job for the requester; the service calls the ``Deliver`` before charging, and
# the ``Progress`` with the job's place in the queue. The mapping is the job's ``reach``.
JobStarter = Callable[
    [Requester, Deliver, Progress, Mapping[str, str]], Awaitable[GenerationResult]
]


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
    feedback = QueueFeedback(reply, running_text=progress or GENERATING)

    async def deliver(result: GenerationResult) -> None:
        await feedback.close()  # no queue update may land on the result
        await reply.deliver(result)

    try:
        try:
            await start(requester, deliver, feedback.feed, reach(interaction, reply))
        finally:
            await feedback.close()
    except DuplicateRequestError as err:
        log.info(
            "interaction %s was delivered twice; job %s handles it", interaction.id, err.job_id
        )
    except JobCancelledError as err:
        await feedback.cancelled(err)
    except DeliveryError as err:
        if not err.notified:
            await reply.fail(err)
    except PromptRefusedError as err:
        await tell_refused(reply, err)  # privately, with an "Ask an admin" button
    except BotError as err:
        await reply.fail(err)

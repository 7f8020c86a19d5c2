"""Running an approved review: the one job an admin's Approve starts, on every platform.

The core decides everything about it: the refused request runs as it was refused, for the
user who asked (charged to them, with their roles' limits), under the event key
``review_run(review_id)`` (so a second Approve, or a redelivered click, runs it once), without
screening (an admin has just overruled the screen), refunded when it fails (the service
refunds every job that does not deliver), and who is told what when it does. The adapter
passes only how its platform delivers the images (and, if it shows one, the queue progress),
and renders the ``ApprovedRun``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.errors import BotError, DeliveryError, DuplicateRequestError
from bot.event_key import review_run
from bot.messages import describe, review_job_failed_text
from bot.models import GenerationResult, Review, ReviewState
from bot.scheduler import Progress
from bot.service import Deliver, ImageService

__all__ = ["ApprovedRun", "run_approved"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ApprovedRun:
    """What running an approved review came to.

    ``result``: the job, delivered and charged, or ``None`` when it did not run or failed.
    ``to_user``: what to tell the user who asked, in the channel they asked in (``None`` when
    there is nothing to tell, or their platform's delivery already told them why it failed).
    ``to_admin``: what to tell the admin who approved (``None`` when there is nothing to tell).
    A redelivered approval, whose job already exists, has none of the three."""

    result: GenerationResult | None = None
    to_user: str | None = None
    to_admin: str | None = None


async def run_approved(
    service: ImageService,
    review: Review,
    *,
    deliver: Deliver,
    progress: Progress | None = None,
) -> ApprovedRun:
    """Run ``review``'s job (``review`` as ``Moderation.decide`` returned it, approved) for
    its user, delivered by ``deliver``. Only the core's refusals and failures (``BotError``)
    become an ``ApprovedRun``; anything else is a bug and propagates."""
    if review.state is not ReviewState.APPROVED:
        raise ValueError(f"review {review.review_id} is {review.state}, not approved")
    try:
        result = await service.generate(
            review.request,
            review.requester,
            event_id=review_run(review.review_id),
            deliver=deliver,
            progress=progress,
            screen=False,
        )
    except DuplicateRequestError as err:
        log.info("review %s: already handled by job %s", review.review_id, err.job_id)
        return ApprovedRun()
    except BotError as err:
        log.info("review %s: approved job failed: %s", review.review_id, type(err).__name__)
        reason = describe(err)
        told = isinstance(err, DeliveryError) and err.notified
        return ApprovedRun(
            to_user=None if told else reason, to_admin=review_job_failed_text(reason)
        )
    return ApprovedRun(result=result)

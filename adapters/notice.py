"""Telling members that a restart interrupted their job, on every platform the same way.

When a process stops before settling a job, any process's orphan sweep refunds it and leaves a
pending notice with what the adapter stored to reach the member (``reach``). Each running
adapter claims its platform's notices every few seconds and turns the member's
"Generating…" / "Queued" / "thinking…" message into ``INTERRUPTED_NOTICE`` with a Try again
button, or posts that notice where the original can no longer be edited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.service import ImageService
from bot.store.ledger import Interrupted

__all__ = ["NOTICE_INTERVAL", "Tell", "relay_notices", "relay_once"]

log = logging.getLogger(__name__)

NOTICE_INTERVAL = 2.0  # seconds between two looks for notices to send

# Tells one member; returns whether they were told (False: the notice is dropped, logged).
Tell = Callable[[Interrupted], Awaitable[bool]]


async def relay_once(service: ImageService, platform: str, tell: Tell) -> int:
    """Send the notices pending now; returns how many members were told."""
    told = 0
    for notice in await service.claim_notices(platform):
        job_id = notice.record.job_id
        try:
            ok = await tell(notice)
        except Exception as exc:
            log.warning("job %s: could not tell its member (%s)", job_id, type(exc).__name__)
            ok = False
        if ok:
            told += 1
            log.info("job %s: told its member it was interrupted", job_id)
        await service.notice_sent(job_id)
    return told


async def relay_notices(
    service: ImageService, platform: str, tell: Tell, *, every: float = NOTICE_INTERVAL
) -> None:
    """``relay_once`` until cancelled."""
    while True:
        try:
            await relay_once(service, platform, tell)
        except Exception as exc:
            log.warning("interrupted-job notices failed (%s); trying again", type(exc).__name__)
        await asyncio.sleep(every)

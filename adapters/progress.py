"""A job's place in the queue, shown on a chat platform without ever holding the job up.

``StatusFeed`` is the ``progress`` callback an adapter passes to ``ImageService.generate``.
The scheduler awaits it with each new ``QueueStatus``; it only records the latest one and
wakes a background task that shows it through the adapter's ``show`` (an edit of a Discord
message, a replaced Slack note). Queue updates are throttled to one every
``UPDATE_INTERVAL_S`` seconds per job, since platforms rate-limit edits; the switch to running
is shown at once and is the last thing shown. Statuses that arrive while an edit is pending
are merged: only the newest is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.models import QueueStatus

__all__ = ["UPDATE_INTERVAL_S", "Show", "StatusFeed"]

log = logging.getLogger(__name__)

UPDATE_INTERVAL_S = 3.0

Show = Callable[[QueueStatus], Awaitable[None]]


class StatusFeed:
    """``await feed(status)`` never blocks on the platform; ``await feed.close()`` stops it
    (before the job's answer is posted, so no late update can land on top of it)."""

    def __init__(self, show: Show, *, interval: float = UPDATE_INTERVAL_S) -> None:
        self._show = show
        self._interval = interval
        self._latest: QueueStatus | None = None
        self._shown: QueueStatus | None = None
        self._shown_at: float | None = None
        self._changed = asyncio.Event()
        self._urgent = asyncio.Event()  # a running status, or close(): skip the throttle
        self._task: asyncio.Task[None] | None = None
        self._showing = False
        self._closed = False

    @property
    def latest(self) -> QueueStatus | None:
        """The newest status the scheduler reported, shown or not."""
        return self._latest

    @property
    def shown(self) -> QueueStatus | None:
        """The status the platform shows now (``None``: nothing yet)."""
        return self._shown

    @property
    def job_id(self) -> str | None:
        return None if self._latest is None else self._latest.job_id

    async def __call__(self, status: QueueStatus) -> None:
        if self._closed or (self._latest is not None and self._latest.running):
            return  # nothing changes the message once the job runs
        self._latest = status
        self._changed.set()
        if status.running:
            self._urgent.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"progress-{status.job_id}")

    async def close(self, *, flush: bool = False) -> None:
        """Stop showing updates; an edit already under way is awaited, not cut off. With
        ``flush``, a status not yet shown is shown now if it is the first one or the switch
        to running (so the requester always saw that the job was taken)."""
        self._closed = True
        self._urgent.set()
        task = self._task
        if task is not None and not task.done():
            if not self._showing:
                task.cancel()
            await asyncio.wait([task])
        latest = self._latest
        unseen = latest is not None and latest != self._shown
        if flush and unseen and latest is not None and (self._shown is None or latest.running):
            await self._show_quietly(latest)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._changed.wait()
            self._changed.clear()
            status = self._latest
            if status is None or status == self._shown:
                continue
            if not status.running and self._shown_at is not None:
                delay = self._shown_at + self._interval - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._urgent.wait(), delay)
                    if self._closed:
                        return
                    self._changed.clear()
                    status = self._latest
                    if status is None or status == self._shown:
                        continue
            await self._show_quietly(status)
            self._shown_at = loop.time()
            if status.running:
                return

    async def _show_quietly(self, status: QueueStatus) -> None:
        self._showing = True
        try:
            await self._show(status)
        except Exception:
            log.warning("job %s: could not show its progress", status.job_id, exc_info=True)
        finally:
            self._showing = False
            self._shown = status

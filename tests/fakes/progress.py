"""A progress callback for the scheduler's and the service's tests (``progress=`` of
``Scheduler.submit`` and ``ImageService.generate``)."""

from __future__ import annotations

import asyncio

from bot.models import QueueStatus

__all__ = ["Recorder"]


class Recorder:
    """Keeps every status it is told; ``await recorder.wait(k)`` returns the k-th once told."""

    def __init__(self) -> None:
        self.statuses: list[QueueStatus] = []
        self._changed = asyncio.Condition()

    async def __call__(self, status: QueueStatus) -> None:
        self.statuses.append(status)
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, count: int) -> QueueStatus:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.statuses) >= count)
        return self.statuses[count - 1]

"""Pacing IDENTIFYs as Discord allows: per 5 seconds, one session start in each of the
``max_concurrency`` buckets, a shard's bucket being ``shard_id % max_concurrency``.

discord.py's own hook waits 5 seconds before every IDENTIFY but the first, whatever the
bucket; a bot allowed 16 at once would start its shards sixteen times slower than it may."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["IDENTIFY_WINDOW_S", "IdentifyPacer"]

IDENTIFY_WINDOW_S = 5.0


class IdentifyPacer:
    """``await pacer.wait(shard_id)`` right before each IDENTIFY. ``max_concurrency`` comes
    from ``GET /gateway/bot`` (``session_start_limit``)."""

    def __init__(
        self,
        max_concurrency: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.max_concurrency = max(1, max_concurrency)
        self._clock = clock
        self._sleep = sleep
        # When each bucket's latest IDENTIFY went (or is booked to go) out.
        self._last: dict[int, float] = {}

    async def wait(self, shard_id: int | None) -> None:
        bucket = (shard_id or 0) % self.max_concurrency
        now = self._clock()
        last = self._last.get(bucket)
        start = now if last is None else max(now, last + IDENTIFY_WINDOW_S)
        # Booked before waiting: a shard asking meanwhile queues behind this one.
        self._last[bucket] = start
        if start > now:
            await self._sleep(start - now)

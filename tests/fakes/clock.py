"""A manual clock for code that takes ``clock`` and ``sleep`` arguments (``bot.scheduler``):
time moves only when a test calls ``advance``, so waits are deterministic and instant."""

from __future__ import annotations

import asyncio

__all__ = ["FakeClock"]


class FakeClock:
    """``clock()`` reads the time; ``await clock.sleep(s)`` returns once ``advance`` has moved
    the time ``s`` seconds on; ``sleeps`` records every delay asked for, and
    ``wait_sleeps(k)`` waits until k sleeps have begun (advance only after that)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._slept = asyncio.Condition()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, future))
        async with self._slept:
            self._slept.notify_all()
        await future

    async def wait_sleeps(self, count: int) -> list[float]:
        async with self._slept:
            await self._slept.wait_for(lambda: len(self.sleeps) >= count)
        return self.sleeps

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [(at, f) for at, f in self._sleepers if at <= self.now]
        self._sleepers = [(at, f) for at, f in self._sleepers if at > self.now]
        for _, future in due:
            if not future.done():
                future.set_result(None)

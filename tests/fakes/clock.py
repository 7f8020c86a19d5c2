"""The one manual clock of the suite: time moves only when a test says so, so waits are
deterministic and instant.

It reads two ways, moved together: ``clock()`` is monotonic seconds, for code that takes
``clock`` and ``sleep`` arguments (``bot.scheduler``), and ``clock.utc()`` an aware UTC
datetime, for the wall clock of the ledger and the admin services (pass ``clock=clock.utc``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

__all__ = ["START", "FakeClock"]

# The wall clock's default start: a Tuesday in the middle of a 30-day month, mid-morning UTC.
START = datetime(2026, 6, 16, 9, 30, tzinfo=UTC)


class FakeClock:
    """``clock()`` reads the time in seconds and ``clock.utc()`` as a datetime;
    ``advance(5)`` or ``advance(hours=1)`` moves both (backwards too, for the wall clock's
    tests), ``set(moment)`` puts the wall clock at ``moment``. ``await clock.sleep(s)``
    returns once the time has moved ``s`` seconds on; ``sleeps`` records every delay asked
    for, and ``wait_sleeps(k)`` waits until k sleeps have begun (advance only after that)."""

    def __init__(self, start: float = 1000.0, *, utc: datetime = START) -> None:
        self.now = start
        self._utc = utc
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._slept = asyncio.Condition()

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return self._utc

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

    def advance(self, seconds: float = 0.0, **delta: float) -> None:
        step = timedelta(**delta)
        # The seconds go in unrounded: the scheduler's model compares ETAs to a microsecond.
        self.now += seconds + step.total_seconds()
        self._utc += step + timedelta(seconds=seconds)
        due = [(at, f) for at, f in self._sleepers if at <= self.now]
        self._sleepers = [(at, f) for at, f in self._sleepers if at > self.now]
        for _, future in due:
            if not future.done():
                future.set_result(None)

    def set(self, moment: datetime) -> None:
        self.advance((moment - self._utc).total_seconds())

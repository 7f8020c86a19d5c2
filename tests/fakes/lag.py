"""How late the event loop runs: a ticker that asks to wake every 5 ms and records how much
later than that it woke. Used by the tests that attack the loop and by the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

__all__ = ["LoopLag"]

PERIOD_S = 0.005


class LoopLag:
    """``async with LoopLag() as lag:`` ticks on the running loop while inside; ``lag.lags``
    are the delays of each tick (seconds), ``lag.worst`` the largest."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def worst(self) -> float:
        return max(self.lags, default=0.0)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(PERIOD_S)  # the ticker's own period, not synchronisation
            self.lags.append(loop.time() - before - PERIOD_S)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

"""What every loopback fake shares: tests wait on conditions over what the fake has recorded
(woken whenever it records something, never by polling or sleeping), and fail at once, with
the bot's log, when the bot process under test dies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Observed"]

T = TypeVar("T")


class Observed:
    """Base of the fakes. Subclasses call ``await self._notify()`` after recording anything
    and describe what they saw in ``summary()``."""

    name = "fake"
    wait_timeout = 10.0

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._watcher: asyncio.Task[None] | None = None
        self._bot_gone: str | None = None

    def summary(self) -> str:
        raise NotImplementedError

    async def wait_for(
        self, predicate: Callable[[], T | None], *, timeout: float | None = None
    ) -> T:
        """Wait until ``predicate()`` is truthy (re-checked whenever the fake records
        something) and return its value; on timeout, ``AssertionError`` with what was seen."""
        timeout = self.wait_timeout if timeout is None else timeout
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        value = predicate()
                        if value:
                            return value
                        if self._bot_gone is not None:
                            raise AssertionError(self._bot_gone)
                        await self._changed.wait()
            except TimeoutError:
                raise AssertionError(
                    f"condition not met within {timeout}s; {self.name} saw:\n{self.summary()}"
                ) from None

    def watch(self, bot: Any) -> None:
        """Make ``wait_for`` fail at once, with the bot's log, if the ``BotProcess`` ``bot``
        exits, instead of waiting out the timeout."""
        self._stop_watching()
        process = bot.process
        assert process is not None, "start the bot before watching it"

        async def watch() -> None:
            code = await process.wait()
            tail = bot.log()[-6000:]
            self._bot_gone = f"the bot exited with status {code}; its log ends:\n{tail}"
            await self._notify()

        self._watcher = asyncio.create_task(watch())

    def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        self._bot_gone = None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

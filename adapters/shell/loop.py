"""An event loop in a thread of its own, for the shell.

GNU readline (history, arrow keys, Ctrl-C on the line) works only in the main thread, where
Python delivers SIGINT. So the shell reads lines there and hands the async work (the service,
the ledger, the image API) to this loop, which never waits on the terminal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")
R = TypeVar("R")


class LoopThread(Generic[T]):
    """``thread = LoopThread(lambda: open_runtime(settings))``, then
    ``with thread as runtime: thread.run(runtime.service.allowance(who))``.

    The resource is entered and left on the loop; an error while entering it is raised from
    ``__enter__`` in the caller's thread. ``run`` waits for a coroutine; Ctrl-C while it waits
    cancels it, waits until it has unwound (a job's refund included), then raises
    ``KeyboardInterrupt``."""

    def __init__(self, resource: Callable[[], AbstractAsyncContextManager[T]]) -> None:
        self._resource = resource
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="shell-loop", daemon=True)

    def __enter__(self) -> T:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        assert self._value is not None
        return self._value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        if self._error is not None and exc is None:
            raise self._error

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        loop = self._loop
        assert loop is not None
        done: concurrent.futures.Future[R] = concurrent.futures.Future()
        tasks: list[asyncio.Task[R]] = []

        def start() -> None:
            task = loop.create_task(coro)
            tasks.append(task)
            task.add_done_callback(lambda finished: _copy(finished, done))

        loop.call_soon_threadsafe(start)
        try:
            return done.result()
        except KeyboardInterrupt:
            # Callbacks run in order, so the task exists by the time this one runs.
            loop.call_soon_threadsafe(lambda: tasks[0].cancel())
            with contextlib.suppress(concurrent.futures.CancelledError, Exception):
                done.result()  # until it has unwound
            raise

    def _main(self) -> None:
        # Ctrl-C is for the main thread (the prompt, or a wait in `run`): a SIGINT taken by
        # this thread, or by the threads it starts (aiosqlite's, the executor's), would leave
        # the main thread blocked. They inherit this mask.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the caller's thread
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._resource() as value:
            self._value = value
            self._ready.set()
            await self._stop.wait()


def _copy(task: asyncio.Task[R], done: concurrent.futures.Future[R]) -> None:
    if task.cancelled():
        done.cancel()
    elif (error := task.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(task.result())

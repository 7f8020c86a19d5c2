"""The queue line users read, and ``StatusFeed``: a job's progress shown without ever holding
the job up, with queue updates throttled and the switch to running shown at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from adapters.progress import StatusFeed
from bot.errors import InvalidRequestError, JobNotFoundError, PermissionDeniedError
from bot.messages import cancel_refused_text, queue_text
from bot.models import QueueStatus


def queued(ahead: int, eta: float | None = 20.0) -> QueueStatus:
    return QueueStatus("job1", ahead, False, eta)


RUNNING = QueueStatus("job1", 0, True, 5.0)


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (queued(3, 20.4), "Queued: 3 ahead of you, about 20 s."),
        (queued(0, 0.2), "Queued: you're next, about 1 s."),
        (queued(12, 150.0), "Queued: 12 ahead of you, about 2 min."),
        (queued(1, None), "Queued: 1 ahead of you."),
    ],
)
def test_queue_text(status: QueueStatus, text: str) -> None:
    assert queue_text(status) == text


def test_a_refused_cancel_says_why() -> None:
    assert "Only the person who asked" in cancel_refused_text(PermissionDeniedError("cancel"))
    for err in (InvalidRequestError("not queued"), JobNotFoundError("job1")):
        assert "no longer waiting" in cancel_refused_text(err)


class Screen:
    """What a platform shows, one entry per edit; ``gate`` holds every edit while cleared."""

    def __init__(self) -> None:
        self.asked: list[QueueStatus] = []
        self.shown: list[QueueStatus] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.changed = asyncio.Condition()

    async def show(self, status: QueueStatus) -> None:
        self.asked.append(status)
        async with self.changed:
            self.changed.notify_all()
        await self.gate.wait()
        self.shown.append(status)
        async with self.changed:
            self.changed.notify_all()

    async def until(self, count: int) -> list[QueueStatus]:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.shown) >= count), 5)
        return self.shown

    async def until_asked(self, count: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.asked) >= count), 5)


async def test_the_callback_never_waits_for_the_platform() -> None:
    screen = Screen()
    screen.gate.clear()  # the platform hangs
    feed = StatusFeed(screen.show)
    await asyncio.wait_for(feed(queued(2)), 0.5)
    # The edit is under way and hangs. (Whether the feed's task starts before the next call
    # returns is the event loop's business: Python 3.12's wait_for does not yield, 3.11's did.)
    await screen.until_asked(1)
    await asyncio.wait_for(feed(queued(1)), 0.5)
    await asyncio.wait_for(feed(RUNNING), 0.5)
    assert screen.shown == []
    screen.gate.set()
    assert await screen.until(2) == [queued(2), RUNNING]  # the newest, not every step
    await feed.close()


async def test_queue_updates_are_throttled_and_running_is_shown_at_once() -> None:
    screen = Screen()
    feed = StatusFeed(screen.show, interval=60.0)
    await feed(queued(3))
    await screen.until(1)
    await feed(queued(2))
    await feed(queued(1))  # within the interval: held back, then merged
    await feed(RUNNING)  # not held back
    assert await screen.until(2) == [queued(3), RUNNING]
    await feed(queued(0))  # nothing changes the message once the job runs
    await feed.close()
    assert screen.shown == [queued(3), RUNNING]


async def test_a_held_back_update_is_shown_once_the_interval_has_passed() -> None:
    screen = Screen()
    feed = StatusFeed(screen.show, interval=0.05)
    await feed(queued(3))
    await screen.until(1)
    started = time.monotonic()
    await feed(queued(2))
    assert await screen.until(2) == [queued(3), queued(2)]
    assert time.monotonic() - started >= 0.04
    await feed.close()


async def test_close_drops_pending_updates_unless_asked_to_flush_the_first_or_running() -> None:
    screen = Screen()
    feed = StatusFeed(screen.show, interval=60.0)
    await feed(queued(3))
    await screen.until(1)
    await feed(queued(2))
    await feed.close(flush=True)  # a throttled queue update is not worth showing now
    await feed(RUNNING)  # closed: ignored
    assert screen.shown == [queued(3)]

    first = Screen()
    first.gate.clear()
    never_shown = StatusFeed(first.show)
    await never_shown(RUNNING)
    first.gate.set()
    await never_shown.close(flush=True)
    assert first.shown == [RUNNING]

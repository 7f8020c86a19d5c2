"""The fair queue between the service and the provider.

``Scheduler`` admits jobs (a per-user and an optional per-server cap on jobs queued or
running, a bounded queue), starts
them in a fair order under a global cap on concurrent provider calls, reports each job's queue
position and an ETA, cancels queued jobs, backs off when the provider rate-limits, and shuts
down gracefully.

Fair order: round-robin across servers (``platform`` + ``workspace_id``), then across users
within a server. The next job comes from the server that was served least recently (one that
has not been served while it has jobs in the system comes first), and within it from the user
served least recently; ties go to whoever has waited longest. So a newcomer's single job
starts before the 2nd..10th jobs of a user who queued ten. A server's or user's turn is
remembered only while it has jobs queued or running.

Back-pressure, by the ``RetryPolicy`` (``bot.retry``, shared with the provider client, where
the worst case is stated): a provider call that raises ``ProviderRateLimitedError`` halves the
effective concurrency (at least 1; calls already in flight then do not halve it again) and
holds every new start until its ``retry_after`` has passed (or the policy's ``default_hold``),
but never for more than ``max_wait`` seconds: one server's 429 must not stop every server's
images. A job whose ``retry_after`` is within ``max_wait`` goes back to the front of the queue
and is retried at most ``requeues`` times; one asked to wait longer (an hour, or an HTTP date
years away) fails at once with ``ProviderWaitTooLongError``, and the queue starts again after
the bounded hold. ``max_wait`` is also the provider client's own cap, the longest wait it
would sit through itself. Each run of ``concurrency`` successful calls started after the cut
then raises the cap by one, back up to ``max_concurrent``.

How the service uses it::

    async with scheduler.admit(job_id, requester) as ticket:  # refusals raise here
        images = await ticket.call(lambda: provider.generate(...), progress=progress)
        await deliver(...)  # still counts against the user's cap and the shutdown grace

Nothing here sleeps for synchronisation: waits are on events, and the clock and the sleep
used for the rate-limit hold are injectable so tests can drive them.

Cost: the dispatch order is built in O(queued + users log users) and cached; starting a job
pops its front, so it is rebuilt only when a job joins or leaves the queue otherwise. A waiting
job is woken only to start or fail, or, when it has a progress callback, when its place has
changed (checked at most once per event-loop turn, however many changes the turn made).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, TypeVar

from bot.errors import (
    JobCancelledError,
    ProviderRateLimitedError,
    QueueFullError,
    ServerBusyError,
    ShuttingDownError,
    TooManyJobsError,
)
from bot.models import QueueFigures, QueueStatus, Requester
from bot.retry import RetryPolicy

__all__ = [
    "JobScheduler",
    "JobTicket",
    "Progress",
    "Scheduler",
    "Ticket",
    "Withdrawal",
    "report_progress",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

Progress = Callable[[QueueStatus], Awaitable[None]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]

_Key = tuple[str, ...]

_QUEUED = "queued"
_RUNNING = "running"  # holds a provider slot
_ADMITTED = "admitted"  # between provider calls: delivering, or before its first call


class Withdrawal(Enum):
    """What cancelling a job found: not queued (running, finished or unknown); queued, and the
    coroutine waiting for it refunds it; queued with nobody waiting for it (its process
    handed it over or died), so the caller refunds it."""

    NOT_QUEUED = "not_queued"
    WAITER_REFUNDS = "waiter_refunds"
    CALLER_REFUNDS = "caller_refunds"


class JobTicket(Protocol):
    """A job admitted by a ``JobScheduler``: its provider calls wait for their turn."""

    job_id: str

    async def call(
        self, factory: Callable[[], Awaitable[T]], *, progress: Progress | None = None
    ) -> T: ...


class JobScheduler(Protocol):
    """What the service needs of a fair queue: this module's ``Scheduler`` (one process) or
    ``bot.cluster.ClusterScheduler`` (every process on one PostgreSQL)."""

    def admit(
        self, job_id: str, requester: Requester
    ) -> contextlib.AbstractAsyncContextManager[JobTicket]: ...

    async def withdraw(self, job_id: str) -> Withdrawal:
        """Cancel a queued job (``Scheduler.cancel``)."""
        ...

    async def hand_over(self) -> None:
        """This process is about to stop: give its queued jobs to the other processes that
        share the queue, if any (``Scheduler``: there are none)."""
        ...

    async def close(self, grace: float) -> None: ...

    @property
    def queued(self) -> int: ...

    @property
    def running(self) -> int: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def latency_seconds(self) -> float | None: ...

    @property
    def cluster(self) -> QueueFigures | None:
        """The shared queue's figures, or ``None`` when this process's queue is the only one."""
        ...


@dataclass(eq=False)
class Ticket:
    """One admitted job. Made by ``Scheduler.admit``; use ``call`` for each provider call."""

    job_id: str
    requester: Requester
    _scheduler: Scheduler
    _seq: int
    _task: asyncio.Task[object] | None
    _state: str = _ADMITTED
    _error: BaseException | None = None
    _started_at: float | None = None
    _epoch: int = 0  # the scheduler's rate-limit epoch when this call started
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _aborted: bool = False
    _reported: int | None = None  # the place last sent to this call's progress callback

    @property
    def space(self) -> _Key:
        return (self.requester.platform, self.requester.workspace_id)

    @property
    def user(self) -> _Key:
        return (self.requester.platform, self.requester.workspace_id, self.requester.user_id)

    def status(self) -> QueueStatus:
        return self._scheduler.status_of(self)

    async def call(
        self, factory: Callable[[], Awaitable[T]], *, progress: Progress | None = None
    ) -> T:
        """Wait for this job's turn (reporting its place to ``progress``), then run
        ``factory()`` under a provider slot. Raises ``JobCancelledError`` or
        ``ShuttingDownError`` if the job is cancelled or the scheduler closes while it waits."""
        scheduler = self._scheduler
        if self._error is not None:
            raise self._error
        if self._state == _ADMITTED:
            if scheduler.closed:
                raise ShuttingDownError()
            scheduler._enqueue(self)
        retries = 0
        while True:
            await self._wait_turn(progress)
            started = scheduler._clock()
            try:
                result = await factory()
            except ProviderRateLimitedError as exc:
                scheduler._finish_call(self, started, rate_limited=exc)
                too_long = scheduler.retry.too_long(exc, self.job_id)
                if too_long is not None:
                    raise too_long from exc
                if retries >= scheduler.retry.requeues or scheduler.closed:
                    raise
                retries += 1
                log.info("job %s: rate-limited; back in the queue (retry %d)", self.job_id, retries)
                scheduler._enqueue(self, front=True)
                continue
            except BaseException:
                scheduler._finish_call(self, started)
                raise
            scheduler._finish_call(self, started, succeeded=True)
            return result

    async def _wait_turn(self, progress: Progress | None) -> None:
        scheduler = self._scheduler
        self._reported = None
        if progress is not None:
            scheduler._watchers.add(self)
        try:
            while True:
                self._wakeup.clear()
                if self._error is not None:
                    raise self._error
                if self._state != _QUEUED:
                    break
                if progress is not None:
                    status = self.status()
                    if status.ahead != self._reported:
                        self._reported = status.ahead
                        await report_progress(progress, status)
                        continue
                await self._wakeup.wait()
        finally:
            scheduler._watchers.discard(self)
        if progress is not None:
            await report_progress(progress, self.status())

    def _abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._aborted = True
            self._task.cancel()


async def report_progress(progress: Progress, status: QueueStatus) -> None:
    """Tell ``progress`` where a job stands; a failing callback is logged, never raised into
    the job."""
    try:
        await progress(status)
    except Exception:
        log.warning("job %s: progress callback failed; ignored", status.job_id, exc_info=True)


class Scheduler:
    """Fair queue and concurrency caps for provider calls; see the module docstring.

    Read-only figures for metrics: ``queued``, ``running`` (provider calls in flight),
    ``active`` (jobs admitted and not finished), ``concurrency`` (the current effective cap),
    ``latency_seconds`` (exponentially weighted mean of recent successful provider calls, or
    None before the first), ``closed``."""

    def __init__(
        self,
        *,
        max_concurrent: int = 4,
        max_per_user: int = 2,
        max_queue: int = 100,
        max_per_server: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        latency_weight: float = 0.3,
        retry: RetryPolicy | None = None,
    ) -> None:
        if max_concurrent < 1 or max_per_user < 1 or max_queue < 0:
            raise ValueError("max_concurrent and max_per_user must be >= 1, max_queue >= 0")
        if max_per_server is not None and max_per_server < 1:
            raise ValueError("max_per_server must be >= 1 (or None: no cap)")
        self.max_concurrent = max_concurrent
        self.max_per_user = max_per_user
        self.max_per_server = max_per_server
        self.max_queue = max_queue
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._weight = latency_weight
        self._concurrency = max_concurrent
        self._successes = 0
        self._epoch = 0  # bumped by each 429 that lowers the cap
        self._hold_until = 0.0
        self._latency: float | None = None
        self._seq = 0
        self._starts = 0
        # Queued tickets: server -> user -> FIFO; rate-limited retries go first.
        self._queues: dict[_Key, dict[_Key, deque[Ticket]]] = {}
        self._retries: deque[Ticket] = deque()
        self._queued = 0
        self._running = 0
        self._tickets: dict[str, Ticket] = {}
        self._per_user: dict[_Key, int] = {}
        self._per_space: dict[_Key, int] = {}
        self._user_turn: dict[_Key, int] = {}
        self._space_turn: dict[_Key, int] = {}
        self._in_flight: set[Ticket] = set()  # tickets whose provider call holds a slot
        # The dispatch order, rebuilt only when a job joins or leaves the queue other than by
        # starting (a start pops the front and the rest keeps its order), with each ticket's
        # index in the order as built; ``_front`` counts the starts since.
        self._order: deque[Ticket] | None = None
        self._index: dict[Ticket, int] = {}
        self._front = 0
        # Tickets waiting with a progress callback, woken (once per event-loop turn at most)
        # only when their place in the queue has changed.
        self._watchers: set[Ticket] = set()
        self._notify_pending = False
        self._timer: asyncio.Task[None] | None = None
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- figures -------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def running(self) -> int:
        return self._running

    @property
    def active(self) -> int:
        return len(self._tickets)

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def latency_seconds(self) -> float | None:
        return self._latency

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def cluster(self) -> None:
        """This process's queue is the only one (``bot.cluster`` shares one)."""
        return None

    # -- admission and cancel ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def admit(self, job_id: str, requester: Requester) -> AsyncIterator[Ticket]:
        """Admit a job (queued at once, or started when a slot is free); refusals raise
        ``ShuttingDownError``, ``TooManyJobsError`` or ``QueueFullError`` before anything is
        queued. The job counts against its user's cap until the block exits. If the
        scheduler's shutdown grace runs out while the block runs, the block's task is
        cancelled and the block raises ``ShuttingDownError``."""
        ticket = self._admit(job_id, requester)
        try:
            yield ticket
        except asyncio.CancelledError as exc:
            task = ticket._task
            if ticket._aborted and task is not None and task.uncancel() == 0:
                raise ShuttingDownError() from exc
            raise
        finally:
            self._release(ticket)

    def _admit(self, job_id: str, requester: Requester) -> Ticket:
        if self._closed:
            raise ShuttingDownError()
        user = (requester.platform, requester.workspace_id, requester.user_id)
        if self._per_user.get(user, 0) >= self.max_per_user:
            raise TooManyJobsError(self.max_per_user)
        space = (requester.platform, requester.workspace_id)
        cap = self.max_per_server
        if cap is not None and self._per_space.get(space, 0) >= cap:
            raise ServerBusyError(cap)
        if self._queued >= self.max_queue and not self._can_start_now():
            raise QueueFullError(self.max_queue)
        self._seq += 1
        ticket = Ticket(
            job_id=job_id,
            requester=requester,
            _scheduler=self,
            _seq=self._seq,
            _task=asyncio.current_task(),
        )
        self._tickets[job_id] = ticket
        self._per_user[user] = self._per_user.get(user, 0) + 1
        self._per_space[ticket.space] = self._per_space.get(ticket.space, 0) + 1
        self._idle.clear()
        self._enqueue(ticket)
        return ticket

    def cancel(self, job_id: str) -> bool:
        """Take a queued job out of the queue; its ``call`` raises ``JobCancelledError``.
        False when the job is not queued here (running, finished, or unknown)."""
        ticket = self._tickets.get(job_id)
        if ticket is None or ticket._state != _QUEUED:
            return False
        self._dequeue(ticket)
        ticket._error = JobCancelledError(job_id)
        ticket._wakeup.set()
        log.info("job %s: cancelled while queued", job_id)
        self._changed()
        return True

    async def withdraw(self, job_id: str) -> Withdrawal:
        return Withdrawal.WAITER_REFUNDS if self.cancel(job_id) else Withdrawal.NOT_QUEUED

    async def hand_over(self) -> None:
        """Nobody to hand queued jobs to: they keep their turns for the shutdown grace."""

    def status(self, job_id: str) -> QueueStatus | None:
        ticket = self._tickets.get(job_id)
        return None if ticket is None else self.status_of(ticket)

    def status_of(self, ticket: Ticket) -> QueueStatus:
        latency = self._latency
        if ticket._state != _QUEUED:
            eta = None
            if latency is not None and ticket._started_at is not None:
                eta = max(0.0, latency - (self._clock() - ticket._started_at))
            return QueueStatus(ticket.job_id, 0, ticket._state == _RUNNING, eta)
        ahead = self._ahead(ticket)
        return QueueStatus(ticket.job_id, ahead, False, self._eta(ahead))

    # -- shutdown ------------------------------------------------------------------------

    async def close(self, grace: float) -> None:
        """Drain, then stop. For ``grace`` seconds queued and running jobs keep their turns
        (and a job admitted meanwhile, from an event acknowledged just before the stop, is
        still taken); then queued jobs fail with ``ShuttingDownError`` and running ones are
        cancelled (they raise ``ShuttingDownError`` too). Returns once every admitted job has
        left."""
        if not self._idle.is_set():
            log.info(
                "scheduler draining: %d queued, %d running; up to %.0f s",
                self._queued,
                self._running,
                grace,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        self._stop()
        if self._idle.is_set():
            return
        remaining = list(self._tickets.values())
        log.warning("shutdown grace over: cancelling %d job(s)", len(remaining))
        for ticket in remaining:
            ticket._abort()
        await self._idle.wait()

    def _stop(self) -> None:
        """No more admissions or starts; every queued job fails with ``ShuttingDownError``."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queued = self._dispatch_order()
        for ticket in queued:
            self._dequeue(ticket)
            ticket._error = ShuttingDownError()
            ticket._wakeup.set()
        if queued:
            log.info("scheduler stopped: %d queued job(s) to refund", len(queued))

    # -- internals -----------------------------------------------------------------------

    def _can_start_now(self) -> bool:
        return (
            not self._retries
            and not self._queues
            and self._running < self._concurrency
            and self._clock() >= self._hold_until
        )

    def _enqueue(self, ticket: Ticket, *, front: bool = False) -> None:
        ticket._state = _QUEUED
        self._order = None
        if front:
            self._retries.append(ticket)
        else:
            users = self._queues.setdefault(ticket.space, {})
            users.setdefault(ticket.user, deque()).append(ticket)
        self._queued += 1
        self._changed()

    def _dequeue(self, ticket: Ticket, *, starting: bool = False) -> None:
        if not starting:
            self._order = None
        if ticket in self._retries:
            self._retries.remove(ticket)
        else:
            users = self._queues[ticket.space]
            fifo = users[ticket.user]
            fifo.remove(ticket)
            if not fifo:
                del users[ticket.user]
            if not users:
                del self._queues[ticket.space]
        self._queued -= 1
        ticket._state = _ADMITTED

    def _release(self, ticket: Ticket) -> None:
        if self._tickets.get(ticket.job_id) is not ticket:
            return
        if ticket._state == _QUEUED:
            self._dequeue(ticket)
        elif ticket._state == _RUNNING:
            self._running -= 1
            self._in_flight.discard(ticket)
        ticket._state = "done"
        del self._tickets[ticket.job_id]
        for counts, turns, key in (
            (self._per_user, self._user_turn, ticket.user),
            (self._per_space, self._space_turn, ticket.space),
        ):
            counts[key] -= 1
            if not counts[key]:
                del counts[key]
                turns.pop(key, None)
        if not self._tickets:
            self._idle.set()
        self._changed()

    def _finish_call(
        self,
        ticket: Ticket,
        started: float,
        *,
        succeeded: bool = False,
        rate_limited: ProviderRateLimitedError | None = None,
    ) -> None:
        if ticket._state == _RUNNING:
            self._running -= 1
            self._in_flight.discard(ticket)
            ticket._state = _ADMITTED
        if succeeded:
            elapsed = max(0.0, self._clock() - started)
            w = self._weight
            self._latency = (
                elapsed if self._latency is None else w * elapsed + (1 - w) * self._latency
            )
            # Only calls started since the last 429 show that the provider has recovered.
            if self._concurrency < self.max_concurrent and ticket._epoch == self._epoch:
                self._successes += 1
                if self._successes >= self._concurrency:
                    self._concurrency += 1
                    self._successes = 0
                    log.info("provider recovering: concurrency back to %d", self._concurrency)
        elif rate_limited is not None:
            wait = self.retry.queue_hold(rate_limited)
            asked = wait if rate_limited.retry_after is None else rate_limited.retry_after
            if ticket._epoch == self._epoch:
                # Calls already in flight when the cap was lowered do not lower it again.
                self._concurrency = max(1, self._concurrency // 2)
                self._epoch += 1
                self._successes = 0
            self._hold_until = max(self._hold_until, self._clock() + wait)
            log.warning(
                "provider rate limit (asked to wait %.2f s): concurrency lowered to %d, next "
                "start in %.2f s",
                asked,
                self._concurrency,
                wait,
            )
        self._changed()

    def _changed(self) -> None:
        self._pump()
        if not self._watchers or self._notify_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._notify_watchers()
            return
        # Coalesce: a burst of changes in one event-loop turn costs one pass.
        self._notify_pending = True
        loop.call_soon(self._notify_watchers)

    def _notify_watchers(self) -> None:
        self._notify_pending = False
        for ticket in self._watchers:
            if ticket._state == _QUEUED and self._ahead(ticket) != ticket._reported:
                ticket._wakeup.set()

    def _pump(self) -> None:
        while self._queued and self._running < self._concurrency and not self._closed:
            now = self._clock()
            if now < self._hold_until:
                self._arm_timer(self._hold_until - now)
                return
            # The front of the dispatch order; starting it leaves the rest of the order as is.
            ticket = self._dispatch_list().popleft()
            self._front += 1
            del self._index[ticket]
            self._dequeue(ticket, starting=True)
            self._starts += 1
            self._user_turn[ticket.user] = self._starts
            self._space_turn[ticket.space] = self._starts
            ticket._state = _RUNNING
            ticket._started_at = now
            ticket._epoch = self._epoch
            self._running += 1
            self._in_flight.add(ticket)
            ticket._wakeup.set()
            log.debug("job %s: started", ticket.job_id)

    def _arm_timer(self, delay: float) -> None:
        if self._timer is not None and not self._timer.done():
            return
        self._timer = asyncio.get_running_loop().create_task(self._wake_after(delay))

    async def _wake_after(self, delay: float) -> None:
        await self._sleep(delay)
        self._timer = None
        self._changed()

    def _ahead(self, ticket: Ticket) -> int:
        """How many queued tickets start before this queued one."""
        self._dispatch_list()
        return self._index[ticket] - self._front

    def _dispatch_order(self) -> list[Ticket]:
        """Every queued ticket in the order it would start if nothing else arrived."""
        return list(self._dispatch_list())

    def _dispatch_list(self) -> deque[Ticket]:
        """The cached dispatch order (the scheduler's own: pop only to start a job)."""
        if self._order is None:
            order = self._build_order()
            self._index = {ticket: i for i, ticket in enumerate(order)}
            self._order = deque(order)
            self._front = 0
        return self._order

    def _build_order(self) -> list[Ticket]:
        """The dispatch order, from scratch: the rate-limited retries first, then one job per
        turn from the server served least recently, from its user served least recently.
        Serving a server (user) makes it the most recently served, so after one sort by (last
        served, oldest job) the servers, and the users within each server, simply take turns
        in a rotation. O(queued + users log users)."""
        order = list(self._retries)
        user_turn = self._user_turn
        space_turn = self._space_turn
        if order:  # each retry served first counts as a turn of its user and server
            user_turn = dict(user_turn)
            space_turn = dict(space_turn)
            starts = self._starts
            for ticket in order:
                starts += 1
                user_turn[ticket.user] = starts
                space_turn[ticket.space] = starts
        spaces: list[tuple[tuple[int, int], deque[deque[Ticket]]]] = []
        for space, users in self._queues.items():
            turn = space_turn.get(space, 0)
            # Turns are unique; only servers never served are told apart by their oldest job.
            oldest = 0 if turn else min(t._seq for fifo in users.values() for t in fifo)
            by_turn = sorted(
                users.items(), key=lambda item: (user_turn.get(item[0], 0), item[1][0]._seq)
            )
            spaces.append(((turn, oldest), deque(deque(fifo) for _, fifo in by_turn)))
        spaces.sort(key=lambda item: item[0])
        rotation = deque(users_ring for _, users_ring in spaces)
        while rotation:
            ring = rotation.popleft()
            fifo = ring.popleft()
            order.append(fifo.popleft())
            if fifo:
                ring.append(fifo)
            if ring:
                rotation.append(ring)
        return order

    def _eta(self, ahead: int) -> float | None:
        """Seconds until the job ``ahead`` places from the front would be done, assuming
        every provider call takes the recent mean latency."""
        latency = self._latency
        if latency is None:
            return None
        now = self._clock()
        hold = max(0.0, self._hold_until - now)
        running = sorted(
            max(0.0, latency - (now - t._started_at))
            for t in self._in_flight
            if t._started_at is not None
        )
        slots = max(1, self._concurrency)
        free = [max(hold, r) for r in running[:slots]]
        free += [hold] * (slots - len(free))
        free.sort()
        # Each job ahead takes the earliest free slot; ours takes the next one. Every slot is
        # free within one latency of the earliest (a call has at most ``latency`` left), so the
        # slots are taken in turn: each round of ``slots`` jobs moves all of them on by one
        # latency.
        return free[ahead % slots] + (ahead // slots) * latency + latency

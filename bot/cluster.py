"""The fair queue shared by every bot process on one PostgreSQL database.

``ClusterScheduler`` is ``bot.scheduler.Scheduler``'s counterpart for several processes: the
same admission caps (``MAX_JOBS_PER_USER`` jobs queued or running per member,
``MAX_JOBS_PER_SERVER`` per server, a bounded queue), the same round-robin across servers and
then users, the same rate-limit back-pressure, but all of it kept in the database
(``bot.store.postgres.queue``), so that the caps are the cluster's and not each process's,
and a member's turn does not depend on which process took the command.

How a job runs: the process that accepted it waits in ``Ticket.call`` until a claim (made by
whichever process saw a slot free up) names it the runner, then calls the provider and
delivers as on one process. A job whose accepting process is gone (it stopped and handed its
queued jobs over, or it died and its lease ran out) is *adopted*: the claiming process runs it
itself (``adopt``, the service's ``run_adopted``) and answers the member through its platform's
``Courier`` (``bot.courier``). Only jobs of platforms this process can answer on are adopted.

What a take-over re-does: a job whose runner died is queued again, at the front, and runs from
the start in another process. If the provider had already answered, it is asked again (the
provider may bill that call twice; the member is charged once, since a job is charged only from
``held``); if the images had already been posted, the member may see them twice.

Wake-ups: a claim sends ``NOTIFY imagine_queue`` to the runner; each process listens on one
connection of its own and, as a fallback for a lost notification or connection, polls its
waiting jobs every ``poll`` seconds. Nothing here sleeps for synchronisation: waits are on
events, notifications and that poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from bot.errors import (
    JobCancelledError,
    JobHandedOverError,
    ProviderRateLimitedError,
    QueueFullError,
    ServerBusyError,
    ShuttingDownError,
    TooManyJobsError,
)
from bot.models import QueueFigures, QueueStatus, Requester
from bot.retry import RetryPolicy
from bot.scheduler import Progress, Withdrawal, report_progress
from bot.store.postgres.queue import CHANNEL, Admission, Claim, PostgresQueue
from bot.store.row import stamp

__all__ = ["Adopt", "ClusterScheduler", "ClusterTicket"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Runs a job this process claimed but did not accept: (ticket, reach, deadline in Unix s).
Adopt = Callable[["ClusterTicket", Mapping[str, str], float | None], Awaitable[None]]

_QUEUED = "queued"
_RUNNING = "running"
_DELIVERING = "delivering"
_DONE = "done"


@dataclass(eq=False)
class ClusterTicket:
    """One job of this process in the cluster's queue."""

    job_id: str
    _cluster: ClusterScheduler
    _task: asyncio.Task[Any] | None
    _state: str = _QUEUED
    _epoch: int = 0
    _started_at: float | None = None
    _error: BaseException | None = None
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _ahead: int | None = None
    _reported: int | None = None
    _watching: bool = False
    _aborted: bool = False
    # The row is another process's now (handed over or taken over): not ours to release.
    _gone: bool = False

    def status(self) -> QueueStatus:
        return self._cluster.status_of(self)

    async def call(
        self, factory: Callable[[], Awaitable[T]], *, progress: Progress | None = None
    ) -> T:
        """Wait for this job's turn (reporting its place to ``progress``), then run
        ``factory()`` under one of the cluster's provider slots."""
        cluster = self._cluster
        retries = 0
        if self._state == _DELIVERING:  # a second provider call for the same job
            await cluster._requeue(self)
        while True:
            await self._wait_turn(progress)
            started = time.monotonic()
            try:
                result = await factory()
            except ProviderRateLimitedError as exc:
                hold = cluster.retry.queue_hold(exc)
                await asyncio.shield(cluster._finish(self, started, rate_limited_for=hold))
                too_long = cluster.retry.too_long(exc, self.job_id)
                if too_long is not None:
                    raise too_long from exc
                if retries >= cluster.retry.requeues or cluster.closed:
                    raise
                retries += 1
                log.info("job %s: rate-limited; back in the queue (retry %d)", self.job_id, retries)
                await cluster._requeue(self)
                continue
            except BaseException:
                await asyncio.shield(cluster._finish(self, started))
                raise
            await asyncio.shield(cluster._finish(self, started, succeeded=True))
            return result

    async def _wait_turn(self, progress: Progress | None) -> None:
        self._reported = None
        self._watching = progress is not None
        try:
            while True:
                self._wakeup.clear()
                if self._error is not None:
                    raise self._error
                if self._state == _RUNNING:
                    break
                if progress is not None and self._ahead not in (None, self._reported):
                    self._reported = self._ahead
                    await report_progress(progress, self.status())
                    continue
                await self._wakeup.wait()
        finally:
            self._watching = False
        if progress is not None:
            await report_progress(progress, self.status())

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wakeup.set()

    def _abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._aborted = True
            self._task.cancel()


class ClusterScheduler:
    """The cluster's fair queue, as seen from one process (see the module docstring).

    Figures for ``/metrics``: ``queued``, ``running`` and ``active`` count this process's own
    jobs; ``cluster`` holds the whole queue's (refreshed every ``poll`` seconds)."""

    def __init__(
        self,
        queue: PostgresQueue,
        *,
        dsn: str,
        now: Callable[[], datetime],
        max_concurrent: int = 4,
        max_per_user: int = 2,
        max_queue: int = 100,
        max_per_server: int | None = None,
        retry: RetryPolicy | None = None,
        poll: float = 1.0,
        take_over_every: float = 5.0,
        latency_weight: float = 0.3,
    ) -> None:
        if max_concurrent < 1 or max_per_user < 1 or max_queue < 0:
            raise ValueError("max_concurrent and max_per_user must be >= 1, max_queue >= 0")
        self._queue = queue
        self._dsn = dsn
        self._now = now
        self.max_concurrent = max_concurrent
        self.max_per_user = max_per_user
        self.max_per_server = max_per_server
        self.max_queue = max_queue
        self.retry = retry or RetryPolicy()
        self._poll = poll
        self._take_over_every = take_over_every
        self._weight = latency_weight
        self._latency: float | None = None
        self._tickets: dict[str, ClusterTicket] = {}
        self._adopt: Adopt | None = None
        self._platforms: Callable[[], Iterable[str]] = tuple
        self._adoptions: set[asyncio.Task[None]] = set()
        self._kicked = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._closed = False
        self._pumper: asyncio.Task[None] | None = None
        self._listener: Any = None
        self._hold_until = 0.0
        self._hold_timer = 0.0  # the hold end a wake-up is already set for
        self._last_take_over = 0.0
        self._figures: QueueFigures | None = None

    # -- set-up --------------------------------------------------------------------------

    def adopt_with(self, adopt: Adopt, platforms: Callable[[], Iterable[str]]) -> None:
        """How this process runs a job it did not accept, and the platforms it can answer
        on (jobs of other platforms are left for other processes)."""
        self._adopt = adopt
        self._platforms = platforms

    async def start(self) -> None:
        """Set the cluster's cap, take over what dead processes left, start listening."""
        await self._queue.configure(self.max_concurrent)
        await self._take_over()
        await self._listen()
        self._pumper = asyncio.create_task(self._pump_forever(), name="cluster-queue")

    async def _listen(self) -> None:
        import asyncpg

        try:
            conn = await asyncpg.connect(self._dsn, timeout=10)
            await conn.add_listener(CHANNEL, self._notified)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("queue notifications unavailable (%s); polling", type(exc).__name__)
            return
        self._listener = conn

    # -- figures -------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return sum(1 for t in self._tickets.values() if t._state == _QUEUED)

    @property
    def running(self) -> int:
        return sum(1 for t in self._tickets.values() if t._state == _RUNNING)

    @property
    def concurrency(self) -> int:
        return self.cluster.concurrency

    @property
    def latency_seconds(self) -> float | None:
        return self._latency

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def cluster(self) -> QueueFigures:
        """The whole queue's figures as of the last poll."""
        return self._figures or QueueFigures(0, 0, self.max_concurrent, self.max_concurrent)

    def status_of(self, ticket: ClusterTicket) -> QueueStatus:
        latency = self._latency
        if ticket._state != _QUEUED:
            eta = None
            if latency is not None and ticket._started_at is not None:
                eta = max(0.0, latency - (time.monotonic() - ticket._started_at))
            return QueueStatus(ticket.job_id, 0, ticket._state == _RUNNING, eta)
        ahead = ticket._ahead or 0
        eta = None
        if latency is not None:
            slots = max(1, self.concurrency)
            eta = (ahead // slots + 1) * latency
        return QueueStatus(ticket.job_id, ahead, False, eta)

    # -- admission and cancel ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def admit(self, job_id: str, requester: Requester) -> AsyncIterator[ClusterTicket]:
        """Queue the job cluster-wide; refusals (``ShuttingDownError``, ``TooManyJobsError``,
        ``QueueFullError``) raise before anything is queued."""
        if self._closed:
            raise ShuttingDownError()
        now = self._now()
        found, claims = await self._queue.admit(
            job_id,
            requester,
            max_per_user=self.max_per_user,
            max_queue=self.max_queue,
            max_per_server=self.max_per_server,
            now_stamp=stamp(now),
            now=now.timestamp(),
            adoptable=() if self._closing else self._platforms(),
        )
        if found == Admission.USER_CAP:
            raise TooManyJobsError(self.max_per_user)
        if found == Admission.SERVER_CAP and self.max_per_server is not None:
            raise ServerBusyError(self.max_per_server)
        if found == Admission.QUEUE_FULL:
            raise QueueFullError(self.max_queue)
        ticket = ClusterTicket(job_id=job_id, _cluster=self, _task=asyncio.current_task())
        self._track(ticket)
        for claim in claims:
            self._started(claim)
        self._kick()
        try:
            yield ticket
        except asyncio.CancelledError as exc:
            task = ticket._task
            if ticket._aborted and task is not None and task.uncancel() == 0:
                raise ShuttingDownError() from exc
            raise
        finally:
            await asyncio.shield(self._release(ticket))

    async def withdraw(self, job_id: str) -> Withdrawal:
        """Cancel a queued job, whichever process accepted it: its waiting ``call`` raises
        ``JobCancelledError`` and the accepting process refunds it. A job no process waits
        for (handed over or taken over, not yet adopted) is the caller's to refund."""
        acceptor = await self._queue.cancel(job_id)
        if acceptor is None:
            return Withdrawal.NOT_QUEUED
        local = self._tickets.get(job_id)
        if local is not None:
            local._fail(JobCancelledError(job_id))
        log.info("job %s: cancelled while queued", job_id)
        return Withdrawal.WAITER_REFUNDS if acceptor else Withdrawal.CALLER_REFUNDS

    # -- shutdown ------------------------------------------------------------------------

    async def close(self, grace: float) -> None:
        """Stop taking jobs. Queued jobs go to the other processes at once when one is alive
        (``JobHandedOverError`` here: neither refunded nor answered); on the last process they
        keep their turns for ``grace`` seconds as on one process. Running jobs get ``grace``;
        then whatever is left is cancelled (and refunded by the service)."""
        await self.hand_over()
        if not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        self._closed = True
        await self._hand_over()  # jobs taken on during the grace
        for ticket in list(self._tickets.values()):
            if ticket._state == _QUEUED:
                ticket._fail(ShuttingDownError())
        if not self._idle.is_set():
            log.warning("shutdown grace over: cancelling %d job(s)", len(self._tickets))
            for ticket in list(self._tickets.values()):
                ticket._abort()
            for task in list(self._adoptions):
                task.cancel()
            await self._idle.wait()
        await self._stop()

    async def hand_over(self) -> None:
        """Stop adopting other processes' jobs, and give this process's queued jobs to the
        others at once (when one is alive): their members hear from whichever runs them."""
        self._closing = True
        await self._hand_over()

    async def _hand_over(self) -> None:
        try:
            handed = set(await self._queue.hand_over(now_stamp=stamp(self._now())))
        except Exception as exc:
            log.warning("shutdown: could not hand queued jobs over (%s)", type(exc).__name__)
            return
        for job_id in handed:
            ticket = self._tickets.get(job_id)
            if ticket is not None and ticket._state == _QUEUED:
                ticket._gone = True
                ticket._fail(JobHandedOverError(job_id))
        if handed:
            log.info("shutdown: %d queued job(s) handed to the other processes", len(handed))

    async def _stop(self) -> None:
        if self._pumper is not None:
            self._pumper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pumper
            self._pumper = None
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None

    # -- internals -----------------------------------------------------------------------

    def _track(self, ticket: ClusterTicket) -> None:
        self._tickets[ticket.job_id] = ticket
        self._idle.clear()

    def _untrack(self, ticket: ClusterTicket) -> None:
        if self._tickets.get(ticket.job_id) is ticket:
            del self._tickets[ticket.job_id]
        ticket._state = _DONE
        if not self._tickets:
            self._idle.set()

    async def _release(self, ticket: ClusterTicket) -> None:
        try:
            if not ticket._gone:
                await self._queue.release(ticket.job_id)
        except Exception:
            log.exception("job %s: could not leave the queue; the take-over will", ticket.job_id)
        finally:
            self._untrack(ticket)
            self._kick()

    async def _finish(
        self,
        ticket: ClusterTicket,
        started: float,
        *,
        succeeded: bool = False,
        rate_limited_for: float | None = None,
    ) -> None:
        if ticket._state == _RUNNING:
            ticket._state = _DELIVERING
        if succeeded:
            elapsed = max(0.0, time.monotonic() - started)
            w = self._weight
            previous = self._latency
            self._latency = elapsed if previous is None else w * elapsed + (1 - w) * previous
        now = self._now()
        try:
            claims, self._hold_until = await self._queue.finish_call(
                ticket.job_id,
                epoch=ticket._epoch,
                succeeded=succeeded,
                rate_limited_for=rate_limited_for,
                now=now.timestamp(),
                now_stamp=stamp(now),
                adoptable=() if self._closing else self._platforms(),
            )
        except Exception:
            log.exception("job %s: could not free its provider slot", ticket.job_id)
            self._kick()  # the pump claims what the finish could not
            return
        # The finish started the next jobs itself: no pump needed.
        for claim in claims:
            self._started(claim)

    async def _requeue(self, ticket: ClusterTicket) -> None:
        if await self._queue.requeue(ticket.job_id):
            ticket._state = _QUEUED
            ticket._ahead = 0
        self._kick()

    def _kick(self) -> None:
        self._kicked.set()

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        # "handover <boot> <count>", "cancel <acceptor> <job>", "start <runner> <job> <epoch>"
        kind, boot, *rest = payload.split(" ")
        if kind == "handover":
            if boot != self._queue.boot:
                self._kick()  # jobs to adopt
            return
        ticket = self._tickets.get(rest[0]) if rest and boot == self._queue.boot else None
        if ticket is None:
            return
        if kind == "cancel":
            ticket._fail(JobCancelledError(ticket.job_id))
        elif kind == "start" and ticket._state == _QUEUED:
            epoch = rest[-1]
            self._run_here(ticket, int(epoch) if epoch.isdigit() else 0)

    async def _pump_forever(self) -> None:
        last_refresh = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._kicked.wait()
            self._kicked.clear()
            try:
                await self._pump()
                # What the notifications should have said, and the places of watched jobs,
                # once a poll: not on every kick, which come with every admission and finish.
                if time.monotonic() - last_refresh >= self._poll:
                    last_refresh = time.monotonic()
                    await self._refresh()
            except Exception as exc:
                log.warning("queue pump failed (%s); trying again", type(exc).__name__)
                await asyncio.sleep(self._poll)

    async def _pump(self) -> None:
        now = self._now()
        moment = now.timestamp()
        if moment - self._last_take_over >= self._take_over_every:
            await self._take_over()
        if moment >= self._hold_until:
            adoptable: Iterable[str] = () if self._closing else self._platforms()
            claims, self._hold_until = await self._queue.claim(
                now_stamp=stamp(now), now=moment, adoptable=adoptable
            )
            for claim in claims:
                self._started(claim)
        elif self._pumper is not None and self._hold_timer != self._hold_until:
            # One wake-up at the hold's end, however many kicks come during it.
            self._hold_timer = self._hold_until
            asyncio.get_running_loop().call_later(self._hold_until - moment, self._kick)

    def _started(self, claim: Claim) -> None:
        ticket = self._tickets.get(claim.job_id)
        if ticket is not None:
            if claim.runner == self._queue.boot and ticket._state == _QUEUED:
                self._run_here(ticket, claim.epoch)
            return
        if claim.adopted and self._adopt is not None:
            task = asyncio.create_task(self._run_adopted(claim), name=f"adopted-{claim.job_id}")
            self._adoptions.add(task)
            task.add_done_callback(self._adoptions.discard)

    def _run_here(self, ticket: ClusterTicket, epoch: int) -> None:
        ticket._state = _RUNNING
        ticket._epoch = epoch
        ticket._started_at = time.monotonic()
        ticket._wakeup.set()

    async def _run_adopted(self, claim: Claim) -> None:
        adoption = await self._queue.adoption(claim.job_id)
        if adoption is None or self._adopt is None:
            await self._queue.release(claim.job_id)
            return
        ticket = ClusterTicket(
            job_id=claim.job_id,
            _cluster=self,
            _task=asyncio.current_task(),
        )
        self._run_here(ticket, claim.epoch)
        self._track(ticket)
        log.info("job %s: taken over from a process that is gone", claim.job_id)
        try:
            await self._adopt(ticket, adoption.reach, adoption.deadline)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s: the job taken over failed", claim.job_id)
        finally:
            await asyncio.shield(self._release(ticket))

    async def _refresh(self) -> None:
        """What the database says of this process's waiting jobs: started (a missed
        notification), cancelled, or another process's now; and the places of those whose
        member watches the queue."""
        waiting = [t for t in self._tickets.values() if t._state == _QUEUED and not t._gone]
        self._figures = await self._queue.figures()
        if not waiting:
            return
        me = self._queue.boot
        found = await self._queue.states([t.job_id for t in waiting])
        watched = []
        for ticket in waiting:
            row = found.get(ticket.job_id)
            if row is None:  # not released by us: cancelled elsewhere
                ticket._gone = True
                ticket._fail(JobCancelledError(ticket.job_id))
                continue
            state, runner, epoch = row
            if state == _QUEUED:
                if ticket._watching:
                    watched.append(ticket)
                continue
            if runner == me:
                self._run_here(ticket, epoch)
            else:
                ticket._gone = True
                ticket._fail(JobHandedOverError(ticket.job_id))
        if watched:
            places = await self._queue.positions([t.job_id for t in watched])
            for ticket in watched:
                ahead = places.get(ticket.job_id)
                if ahead is not None and ahead != ticket._ahead:
                    ticket._ahead = ahead
                    ticket._wakeup.set()

    async def _take_over(self) -> None:
        self._last_take_over = self._now().timestamp()
        await self._queue.take_over(now_stamp=stamp(self._now()))

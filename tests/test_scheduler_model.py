"""The scheduler against a straightforward model of its rules, on random workloads: jobs from
several users of several servers arrive, finish (after random provider latencies), are
rate-limited or cancelled; after every step the jobs running, each queued job's place and
ETA, and the last place each job's progress callback was told must be what the model says.

The model recomputes everything from scratch by the rules in ``bot.scheduler``'s docstring
(rate-limited retries first; then the server served least recently, then its user served
least recently, ties to the job that has waited longest), with the ETA as a loop that hands
each job ahead the earliest free slot."""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import (
    JobCancelledError,
    ProviderRateLimitedError,
    QueueFullError,
    TooManyJobsError,
)
from bot.models import QueueStatus, Requester
from bot.retry import RetryPolicy
from bot.scheduler import Scheduler
from tests.fakes.clock import FakeClock

CAP, PER_USER, MAX_QUEUE, WEIGHT = 3, 2, 12, 0.3
SERVERS = ("G1", "G2", "G3")
USERS = ("ann", "bob", "cy", "dee")


@dataclass(eq=False)
class Job:
    job_id: str
    server: str
    user: str
    seq: int
    started_at: float = 0.0
    epoch: int = 0

    @property
    def space(self) -> tuple[str, str]:
        return ("discord", self.server)

    @property
    def who(self) -> tuple[str, str, str]:
        return ("discord", self.server, self.user)


@dataclass
class Model:
    """The scheduler's rules, computed the slow and obvious way."""

    clock: FakeClock
    cap: int = CAP
    per_user: int = PER_USER
    max_queue: int = MAX_QUEUE
    queue: list[Job] = field(default_factory=list)  # arrival order
    retries: list[Job] = field(default_factory=list)
    running: list[Job] = field(default_factory=list)
    active: list[Job] = field(default_factory=list)
    user_turn: dict[tuple[str, ...], int] = field(default_factory=dict)
    space_turn: dict[tuple[str, ...], int] = field(default_factory=dict)
    starts: int = 0
    seq: int = 0
    concurrency: int = 0
    successes: int = 0
    epoch: int = 0
    latency: float | None = None
    started: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.concurrency = self.cap

    def order(self) -> list[Job]:
        """Every queued job in the order it would start: pick, serve, repeat."""
        user_turn, space_turn, starts = dict(self.user_turn), dict(self.space_turn), self.starts
        retries, left, order = list(self.retries), list(self.queue), []
        while retries or left:
            job = retries.pop(0) if retries else pick(left, user_turn, space_turn)
            if job in left:
                left.remove(job)
            starts += 1
            user_turn[job.who], space_turn[job.space] = starts, starts
            order.append(job)
        return order

    def pump(self) -> None:
        while (self.queue or self.retries) and len(self.running) < self.concurrency:
            job = (
                self.retries[0]
                if self.retries
                else pick(self.queue, self.user_turn, self.space_turn)
            )
            (self.retries if job in self.retries else self.queue).remove(job)
            self.starts += 1
            self.user_turn[job.who], self.space_turn[job.space] = self.starts, self.starts
            job.started_at, job.epoch = self.clock(), self.epoch
            self.running.append(job)
            self.started.append(job.job_id)

    def admit(self, server: str, user: str) -> Job | type[Exception]:
        job = Job(f"j{self.seq + 1}", server, user, self.seq + 1)
        if sum(j.who == job.who for j in self.active) >= self.per_user:
            return TooManyJobsError
        can_start = not (self.queue or self.retries) and len(self.running) < self.concurrency
        if len(self.queue) + len(self.retries) >= self.max_queue and not can_start:
            return QueueFullError
        self.seq += 1
        self.active.append(job)
        self.queue.append(job)
        self.pump()
        return job

    def finish(self, job: Job, *, rate_limited: bool) -> None:
        self.running.remove(job)
        if rate_limited:
            if job.epoch == self.epoch:
                self.concurrency, self.epoch, self.successes = (
                    max(1, self.concurrency // 2),
                    (self.epoch + 1),
                    0,
                )
            self.pump()  # the freed slot is given out before the retry is queued again
            self.retries.append(job)
        else:
            elapsed = self.clock() - job.started_at
            prior = self.latency
            self.latency = elapsed if prior is None else WEIGHT * elapsed + (1 - WEIGHT) * prior
            if self.concurrency < self.cap and job.epoch == self.epoch:
                self.successes += 1
                if self.successes >= self.concurrency:
                    self.concurrency, self.successes = self.concurrency + 1, 0
            self.leave(job)
        self.pump()

    def leave(self, job: Job) -> None:
        self.active.remove(job)
        for turns, key in ((self.user_turn, job.who), (self.space_turn, job.space)):
            if not any(key in (j.who, j.space) for j in self.active):
                turns.pop(key, None)

    def cancel(self, job: Job) -> None:
        (self.retries if job in self.retries else self.queue).remove(job)
        self.leave(job)
        self.pump()

    def eta(self, ahead: int) -> float | None:
        if self.latency is None:
            return None
        latency, now = self.latency, self.clock()
        left = sorted(max(0.0, latency - (now - j.started_at)) for j in self.running)
        free = sorted(left[: self.concurrency] + [0.0] * (self.concurrency - len(left)))
        for _ in range(ahead):
            free[0] += latency
            free.sort()
        return free[0] + latency


def pick(
    queued: list[Job], user_turn: dict[tuple[str, ...], int], space_turn: dict[tuple[str, ...], int]
) -> Job:
    """The next job (retries aside): from the server served least recently (never: 0), ties
    to its oldest job; within it, the user served least recently, ties to the oldest head."""
    oldest: dict[tuple[str, ...], int] = {}
    for job in queued:
        oldest[job.space] = min(job.seq, oldest.get(job.space, job.seq))
    space = min(oldest, key=lambda s: (space_turn.get(s, 0), oldest[s]))
    heads: dict[tuple[str, ...], Job] = {}
    for job in queued:
        if job.space == space:
            heads.setdefault(job.who, job)
    return min(heads.values(), key=lambda j: (user_turn.get(j.who, 0), j.seq))


class Watch:
    """A progress callback that keeps every status; a test waits for a condition on them."""

    def __init__(self) -> None:
        self.statuses: list[QueueStatus] = []
        self.changed = asyncio.Condition()

    async def __call__(self, status: QueueStatus) -> None:
        self.statuses.append(status)
        async with self.changed:
            self.changed.notify_all()

    async def settled(self, ahead: int, running: bool) -> None:
        def told() -> bool:
            last = self.statuses[-1] if self.statuses else None
            return last is not None and (last.ahead, last.running) == (ahead, running)

        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(told)


SUBMIT = st.tuples(st.just("submit"), st.sampled_from(SERVERS), st.sampled_from(USERS))
OPS = st.lists(
    st.one_of(
        SUBMIT,
        SUBMIT,
        st.tuples(st.just("finish"), st.integers(0, 5), st.sampled_from([0.5, 1.0, 2.5])),
        st.tuples(st.just("rate_limit"), st.integers(0, 5), st.just(0.0)),
        st.tuples(st.just("cancel"), st.integers(0, 11), st.just(0.0)),
    ),
    min_size=12,
    max_size=60,
)


async def scenario(
    ops: list[tuple[str, object, object]], model: Model, *, check_at: set[int] | None = None
) -> None:
    """Run ``ops`` on a real scheduler and on ``model``; compare after each op (or after the
    ops numbered in ``check_at``), and the whole start order at the end."""
    clock = model.clock
    scheduler = Scheduler(
        max_concurrent=model.cap,
        max_per_user=model.per_user,
        max_queue=model.max_queue,
        clock=clock,
        sleep=clock.sleep,
        latency_weight=WEIGHT,
        retry=RetryPolicy(requeues=1000),
    )
    started = Started()
    gates: dict[str, asyncio.Event] = {}
    outcome: dict[str, BaseException | None] = {}
    attempt_over: dict[str, asyncio.Event] = {}
    watches: dict[str, Watch] = {}
    tasks: dict[str, asyncio.Task[str]] = {}

    async def work(job_id: str) -> str:
        await started.add(job_id)
        gates[job_id] = asyncio.Event()
        await gates[job_id].wait()
        error = outcome.pop(job_id)
        attempt_over[job_id].set()
        if error is not None:
            raise error
        return job_id

    async def run(job_id: str, who: Requester, admitted: asyncio.Event) -> str:
        async with scheduler.admit(job_id, who) as ticket:
            admitted.set()
            return await ticket.call(lambda: work(job_id), progress=watches[job_id])

    for step, (op, a, b) in enumerate(ops):
        if op == "submit":
            assert isinstance(a, str) and isinstance(b, str)
            expected = model.admit(a, b)
            job_id = f"j{model.seq}" if isinstance(expected, Job) else "refused"
            who = Requester(platform="discord", workspace_id=a, channel_id="C", user_id=b)
            admitted = asyncio.Event()
            watches[job_id] = Watch()
            task = asyncio.create_task(run(job_id, who, admitted))
            task.add_done_callback(lambda _, admitted=admitted: admitted.set())
            await admitted.wait()
            if isinstance(expected, Job):
                tasks[job_id] = task
            else:
                try:
                    await task
                except (TooManyJobsError, QueueFullError) as refused:
                    assert isinstance(refused, expected)
                else:
                    raise AssertionError(f"{a}/{b} admitted; the model refuses: {expected}")
        elif op in ("finish", "rate_limit") and model.running:
            assert isinstance(a, int) and isinstance(b, float)
            job = model.running[a % len(model.running)]
            await started.reach(model.started)
            clock.advance(b)
            limited = op == "rate_limit"
            outcome[job.job_id] = (
                ProviderRateLimitedError("429", retry_after=0.0) if limited else None
            )
            attempt_over[job.job_id] = asyncio.Event()
            gates[job.job_id].set()
            await attempt_over[job.job_id].wait()
            if not limited:  # (a retry is back in the queue by the time attempt_over wakes us)
                assert await tasks.pop(job.job_id) == job.job_id
            model.finish(job, rate_limited=limited)
        elif op == "cancel" and (model.queue or model.retries):
            assert isinstance(a, int)
            queued = model.queue + model.retries
            job = queued[a % len(queued)]
            assert scheduler.cancel(job.job_id)
            model.cancel(job)
            task = tasks.pop(job.job_id)
            await asyncio.wait([task])
            assert isinstance(task.exception(), JobCancelledError)
        if check_at is None or step in check_at:
            await _check(scheduler, model, watches, started)

    await started.reach(model.started)
    await scheduler.close(grace=0.0)
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert scheduler.active == 0


class Started:
    """The provider calls begun, in order: each runs in its job's own task."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.changed = asyncio.Condition()

    async def add(self, job_id: str) -> None:
        self.calls.append(job_id)
        async with self.changed:
            self.changed.notify_all()

    async def reach(self, expected: list[str]) -> None:
        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(lambda: len(self.calls) >= len(expected))
        assert self.calls == expected


async def _check(
    scheduler: Scheduler, model: Model, watches: dict[str, Watch], started: Started
) -> None:
    await started.reach(model.started)
    assert (scheduler.running, scheduler.queued, scheduler.active) == (
        len(model.running),
        len(model.queue) + len(model.retries),
        len(model.active),
    )
    assert scheduler.concurrency == model.concurrency
    for job in model.running:
        left = None
        if model.latency is not None:
            left = max(0.0, model.latency - (model.clock() - job.started_at))
        assert scheduler.status(job.job_id) == QueueStatus(job.job_id, 0, True, left)
        await watches[job.job_id].settled(0, True)
    for ahead, job in enumerate(model.order()):
        eta = model.eta(ahead)
        status = scheduler.status(job.job_id)
        assert status is not None
        assert (status.ahead, status.running) == (ahead, False), job.job_id
        assert (status.eta_seconds is None) == (eta is None)
        if eta is not None and status.eta_seconds is not None:
            assert abs(status.eta_seconds - eta) < 1e-6
        await watches[job.job_id].settled(ahead, False)
        # Told again only when its place changed (a retry starts telling afresh).
        told = watches[job.job_id].statuses
        for before, after in itertools.pairwise(told):
            assert before.running or after.running or before.ahead != after.ahead


@settings(max_examples=300, deadline=None, database=None)
@given(OPS)
def test_dispatch_order_places_and_etas_match_a_simple_model(
    ops: list[tuple[str, object, object]],
) -> None:
    asyncio.run(scenario(ops, Model(FakeClock())))


async def test_a_large_burst_from_many_users_starts_in_the_models_order() -> None:
    rng = random.Random(6)
    users = [(rng.choice(SERVERS), f"user{i}") for i in range(80)]
    ops: list[tuple[str, object, object]] = [("submit", *rng.choice(users)) for _ in range(300)]
    ops += [("finish", rng.randrange(2), 1.0) for _ in range(300)]
    model = Model(FakeClock(), cap=2, per_user=3, max_queue=400)

    await scenario(ops, model, check_at={299, 300, 450})

    assert len(model.started) > 200  # most admitted (3 per user at most), all run in order

"""The fair scheduler on its own: round-robin order across users and servers, the caps, cancel,
429 back-pressure, progress with an ETA, and shutdown. Time is a ``FakeClock``; every wait is
on an event, so nothing here sleeps."""

from __future__ import annotations

import asyncio

import pytest

from bot.errors import (
    ConfigError,
    JobCancelledError,
    ProviderRateLimitedError,
    ProviderWaitTooLongError,
    QueueFullError,
    ServerBusyError,
    ShuttingDownError,
    TooManyJobsError,
)
from bot.models import QueueStatus, Requester
from bot.retry import RetryPolicy
from bot.scheduler import Progress, Scheduler
from tests.fakes.clock import FakeClock
from tests.fakes.progress import Recorder


def member(user: str, server: str = "G1") -> Requester:
    return Requester(platform="discord", workspace_id=server, channel_id="C1", user_id=user)


class Jobs:
    """Runs jobs the way the service does: admit, then one provider call (held until the test
    finishes it), each in its own task."""

    def __init__(self, scheduler: Scheduler, clock: FakeClock | None = None) -> None:
        self.scheduler = scheduler
        self.clock = clock
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.fail_once: dict[str, BaseException] = {}
        self._changed = asyncio.Condition()

    async def submit(
        self, job_id: str, requester: Requester, *, progress: Progress | None = None
    ) -> asyncio.Task[str]:
        """Returns once the job is admitted (or refused: the task then holds the error)."""
        admitted = asyncio.Event()
        self.gates[job_id] = asyncio.Event()
        task = asyncio.create_task(self._run(job_id, requester, admitted, progress))
        task.add_done_callback(lambda _: admitted.set())
        await admitted.wait()
        return task

    async def _run(
        self,
        job_id: str,
        requester: Requester,
        admitted: asyncio.Event,
        progress: Progress | None,
    ) -> str:
        async with self.scheduler.admit(job_id, requester) as ticket:
            admitted.set()
            return await ticket.call(lambda: self._work(job_id), progress=progress)

    async def _work(self, job_id: str) -> str:
        self.started.append(job_id)
        async with self._changed:
            self._changed.notify_all()
        await self.gates[job_id].wait()
        error = self.fail_once.pop(job_id, None)
        if error is not None:
            raise error
        return job_id

    async def wait_started(self, count: int) -> list[str]:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.started) >= count)
        return list(self.started)

    def finish(self, job_id: str, *, after: float = 0.0) -> None:
        if self.clock is not None:
            self.clock.advance(after)
        self.gates[job_id].set()


async def run_in_order(jobs: Jobs, tasks: dict[str, asyncio.Task[str]]) -> list[str]:
    """Finish the running job each time until all are done (one slot); the start order."""
    for count in range(1, len(tasks) + 1):
        job_id = (await jobs.wait_started(count))[-1]
        jobs.finish(job_id)
        assert await tasks[job_id] == job_id
    return jobs.started


async def test_a_newcomer_runs_before_the_rest_of_a_burst() -> None:
    jobs = Jobs(Scheduler(max_concurrent=1, max_per_user=20))
    tasks = {f"a{i}": await jobs.submit(f"a{i}", member("ann")) for i in range(11)}
    tasks["b0"] = await jobs.submit("b0", member("bob"))
    assert jobs.scheduler.queued == 11

    order = await run_in_order(jobs, tasks)

    assert order == ["a0", "b0", *[f"a{i}" for i in range(1, 11)]]


async def test_users_take_turns_in_arrival_order() -> None:
    jobs = Jobs(Scheduler(max_concurrent=1, max_per_user=3))
    tasks = {}
    for job_id, user in [("a0", "ann"), ("a1", "ann"), ("a2", "ann"), ("b0", "bob")]:
        tasks[job_id] = await jobs.submit(job_id, member(user))
    for job_id, user in [("b1", "bob"), ("c0", "cy")]:
        tasks[job_id] = await jobs.submit(job_id, member(user))

    order = await run_in_order(jobs, tasks)

    assert order == ["a0", "b0", "c0", "a1", "b1", "a2"]


async def test_servers_take_turns_before_users_do() -> None:
    jobs = Jobs(Scheduler(max_concurrent=1, max_per_user=3))
    tasks = {}
    for user in ("u1", "u2", "u3"):
        for i in "ab":
            tasks[user + i] = await jobs.submit(user + i, member(user, "busy-server"))
    for i in "abc":
        tasks["v1" + i] = await jobs.submit("v1" + i, member("v1", "small-server"))

    order = await run_in_order(jobs, tasks)

    # The small server's one user gets every other start, not one in seven.
    assert order == ["u1a", "v1a", "u2a", "v1b", "u3a", "v1c", "u1b", "u2b", "u3b"]


async def test_concurrency_cap_limits_calls_in_flight() -> None:
    jobs = Jobs(Scheduler(max_concurrent=2, max_per_user=5))
    tasks = [await jobs.submit(f"j{i}", member("ann")) for i in range(5)]
    await jobs.wait_started(2)
    assert (jobs.scheduler.running, jobs.scheduler.queued) == (2, 3)

    jobs.finish("j0")
    assert await tasks[0] == "j0"
    assert await jobs.wait_started(3) == ["j0", "j1", "j2"]
    assert (jobs.scheduler.running, jobs.scheduler.queued) == (2, 2)
    for job_id in ("j1", "j2", "j3", "j4"):
        await jobs.wait_started(int(job_id[1]) + 1)
        jobs.finish(job_id)
    assert [await t for t in tasks[1:]] == ["j1", "j2", "j3", "j4"]
    assert (jobs.scheduler.running, jobs.scheduler.queued, jobs.scheduler.active) == (0, 0, 0)


async def test_a_server_over_its_cap_is_refused_while_other_servers_are_not() -> None:
    jobs = Jobs(Scheduler(max_concurrent=1, max_per_user=5, max_per_server=2))
    first = await jobs.submit("a0", member("ann"))
    second = await jobs.submit("b0", member("bob"))  # another member of the same server
    third = await jobs.submit("c0", member("cy"))
    with pytest.raises(ServerBusyError) as refused:
        await third
    assert refused.value.limit == 2
    elsewhere = await jobs.submit("d0", member("dee", server="G2"))
    assert not elsewhere.done()

    await jobs.wait_started(1)
    jobs.finish("a0")
    assert await first == "a0"
    again = await jobs.submit("c1", member("cy"))  # a place freed on the server
    assert not again.done()
    for count, job_id in enumerate(("d0", "b0", "c1"), start=2):
        await jobs.wait_started(count)
        jobs.finish(job_id)
    assert [await t for t in (second, elsewhere, again)] == ["b0", "d0", "c1"]
    assert jobs.started == ["a0", "d0", "b0", "c1"]  # the other server's one job went next


async def test_a_user_over_the_per_user_cap_is_refused_until_a_job_finishes() -> None:
    jobs = Jobs(Scheduler(max_concurrent=1, max_per_user=2))
    first = await jobs.submit("a0", member("ann"))
    second = await jobs.submit("a1", member("ann"))  # queued: still counts
    third = await jobs.submit("a2", member("ann"))

    with pytest.raises(TooManyJobsError) as refused:
        await third
    assert refused.value.limit == 2
    other = await jobs.submit("b0", member("ann", server="G2"))  # another server's "ann"
    assert not other.done()

    await jobs.wait_started(1)
    jobs.finish("a0")
    assert await first == "a0"
    again = await jobs.submit("a3", member("ann"))
    assert not again.done()
    for job_id in ("b0", "a1", "a3"):
        jobs.finish(job_id)
    assert [await second, await other, await again] == ["a1", "b0", "a3"]


async def test_a_full_queue_refuses_new_jobs() -> None:
    jobs = Jobs(Scheduler(max_concurrent=1, max_per_user=1, max_queue=2))
    running = await jobs.submit("a", member("ann"))
    queued = [await jobs.submit(j, member(j)) for j in ("bob", "cy")]
    refused = await jobs.submit("dee", member("dee"))

    with pytest.raises(QueueFullError) as full:
        await refused
    assert full.value.capacity == 2
    assert jobs.scheduler.queued == 2

    for job_id in ("a", "bob", "cy"):
        jobs.finish(job_id)
    assert [await running, *[await t for t in queued]] == ["a", "bob", "cy"]


async def test_cancel_takes_a_queued_job_out_of_the_queue() -> None:
    jobs = Jobs(Scheduler(max_concurrent=1))
    running = await jobs.submit("a", member("ann"))
    doomed = await jobs.submit("b", member("bob"))
    after = await jobs.submit("c", member("cy"))

    assert jobs.scheduler.cancel("a") is False  # already running
    assert jobs.scheduler.cancel("b") is True
    assert jobs.scheduler.cancel("b") is False  # once only
    assert jobs.scheduler.cancel("nope") is False
    with pytest.raises(JobCancelledError) as cancelled:
        await doomed
    assert cancelled.value.job_id == "b"
    assert jobs.scheduler.status("c") == QueueStatus("c", 0, False, None)

    jobs.finish("a")
    jobs.finish("c")
    assert (await running, await after) == ("a", "c")
    assert jobs.started == ["a", "c"]


async def test_progress_reports_a_falling_place_and_an_eta_from_recent_latency() -> None:
    clock = FakeClock()
    jobs = Jobs(Scheduler(max_concurrent=1, clock=clock, sleep=clock.sleep), clock)
    await jobs.submit("x", member("xi"))
    await jobs.submit("y", member("yu"))
    await jobs.submit("z", member("zo"))
    progress = Recorder()
    task = await jobs.submit("w", member("wu"), progress=progress)

    assert await progress.wait(1) == QueueStatus("w", 2, False, None)  # no latency yet
    jobs.finish("x", after=10.0)  # x took 10 s: y starts, w has 1 ahead
    assert await progress.wait(2) == QueueStatus("w", 1, False, pytest.approx(30.0))
    assert jobs.scheduler.latency_seconds == pytest.approx(10.0)
    jobs.finish("y", after=4.0)  # latency = 0.3 * 4 + 0.7 * 10 = 8.2
    assert await progress.wait(3) == QueueStatus("w", 0, False, pytest.approx(16.4))
    jobs.finish("z")  # latency = 0.7 * 8.2 = 5.74
    assert await progress.wait(4) == QueueStatus("w", 0, True, pytest.approx(5.74))
    jobs.finish("w")
    assert await task == "w"
    assert len(progress.statuses) == 4


async def test_a_failing_progress_callback_does_not_stop_the_job() -> None:
    async def broken(status: QueueStatus) -> None:
        raise RuntimeError("platform hiccup")

    jobs = Jobs(Scheduler(max_concurrent=1))
    first = await jobs.submit("a", member("ann"))
    second = await jobs.submit("b", member("bob"), progress=broken)
    jobs.finish("a")
    jobs.finish("b")
    assert (await first, await second) == ("a", "b")


async def test_a_429_halves_concurrency_and_holds_starts_until_retry_after() -> None:
    clock = FakeClock()
    scheduler = Scheduler(max_concurrent=4, max_per_user=9, clock=clock, sleep=clock.sleep)
    jobs = Jobs(scheduler, clock)
    progress = Recorder()
    tasks = {"a": await jobs.submit("a", member("ann"), progress=progress)}
    tasks |= {j: await jobs.submit(j, member("ann")) for j in "bcdef"}
    await jobs.wait_started(4)
    assert await progress.wait(1) == QueueStatus("a", 0, True, None)

    jobs.fail_once["a"] = ProviderRateLimitedError("slow down", retry_after=5.0)
    jobs.finish("a")
    # a was rate-limited: back at the front of the queue, and nothing starts for 5 s.
    assert await progress.wait(2) == QueueStatus("a", 0, False, None)
    jobs.gates["a"] = asyncio.Event()  # hold a's retry too
    assert scheduler.concurrency == 2
    for job_id in "bcd":
        jobs.finish(job_id)
        await tasks[job_id]
    assert await clock.wait_sleeps(1) == [5.0]
    assert (scheduler.running, scheduler.queued) == (0, 3)
    assert jobs.started == ["a", "b", "c", "d"]

    clock.advance(4.9)
    assert scheduler.running == 0
    clock.advance(0.1)
    started = await jobs.wait_started(6)
    assert started[4:] == ["a", "e"]  # the retry first, then at most 2 at once
    assert (scheduler.running, scheduler.queued) == (2, 1)

    # Recovery: one more slot after each run of `concurrency` successes.
    jobs.finish("a")
    assert await tasks["a"] == "a"
    jobs.finish("e")
    await tasks["e"]
    assert scheduler.concurrency == 3
    jobs.finish("f")
    await tasks["f"]
    assert scheduler.concurrency == 3
    assert jobs.started == ["a", "b", "c", "d", "a", "e", "f"]


async def test_a_burst_of_429s_from_calls_in_flight_halves_the_cap_once() -> None:
    clock = FakeClock()
    scheduler = Scheduler(max_concurrent=4, max_per_user=4, clock=clock, sleep=clock.sleep)
    jobs = Jobs(scheduler, clock)
    recorders = {j: Recorder() for j in "abcd"}
    tasks = {j: await jobs.submit(j, member("ann"), progress=recorders[j]) for j in "abcd"}
    await jobs.wait_started(4)

    for job_id in "abc":
        jobs.gates[job_id].set()
        jobs.fail_once[job_id] = ProviderRateLimitedError("429", retry_after=1.0)
    for job_id in "abc":
        assert (await recorders[job_id].wait(2)).running is False  # back in the queue
        jobs.gates[job_id] = asyncio.Event()

    assert scheduler.concurrency == 2  # 4 -> 2 once, not 4 -> 2 -> 1 -> 1
    jobs.finish("d")
    await tasks["d"]
    assert scheduler.concurrency == 2  # d started before the cut: no recovery credit
    assert await clock.wait_sleeps(1) == [1.0]
    clock.advance(1.0)
    assert (await jobs.wait_started(6))[4:] == ["a", "b"]
    for job_id in "abc":
        jobs.finish(job_id)
    assert [await tasks[j] for j in "abc"] == ["a", "b", "c"]


async def test_a_second_429_gives_up_and_raises() -> None:
    clock = FakeClock()
    scheduler = Scheduler(
        max_concurrent=2, clock=clock, sleep=clock.sleep, retry=RetryPolicy(default_hold=2.0)
    )
    jobs = Jobs(scheduler, clock)
    progress = Recorder()
    task = await jobs.submit("a", member("ann"), progress=progress)
    jobs.fail_once["a"] = ProviderRateLimitedError("slow down")  # no retry-after given
    jobs.finish("a")
    assert await progress.wait(2) == QueueStatus("a", 0, False, None)
    assert await clock.wait_sleeps(1) == [2.0]
    assert scheduler.concurrency == 1

    jobs.fail_once["a"] = ProviderRateLimitedError("still slow", retry_after=3.0)
    clock.advance(2.0)
    with pytest.raises(ProviderRateLimitedError, match="still slow"):
        await task
    assert jobs.started == ["a", "a"]
    assert scheduler.active == 0


@pytest.mark.parametrize("retry_after", [3600.0, 2.3e9])  # an hour; an HTTP date in 2099
async def test_a_429_asking_for_longer_than_the_hold_fails_that_job_and_others_go_on(
    retry_after: float,
) -> None:
    clock = FakeClock()
    scheduler = Scheduler(
        max_concurrent=1, clock=clock, sleep=clock.sleep, retry=RetryPolicy(max_wait=20.0)
    )
    jobs = Jobs(scheduler, clock)
    limited = await jobs.submit("a", member("ann"))
    progress = Recorder()
    waiting = await jobs.submit("b", member("bob"), progress=progress)
    assert await progress.wait(1) == QueueStatus("b", 0, False, None)

    jobs.fail_once["a"] = ProviderRateLimitedError("slow down", retry_after=retry_after)
    jobs.finish("a")
    # New starts are held for the bounded 20 s, not for the provider's wait...
    assert await clock.wait_sleeps(1) == [20.0]
    # ...and the job that was told to wait that long fails instead of waiting.
    with pytest.raises(ProviderWaitTooLongError) as failed:
        await limited
    assert (failed.value.wait, failed.value.hold) == (retry_after, 20.0)
    clock.advance(19.9)
    assert (scheduler.running, scheduler.queued) == (0, 1)
    clock.advance(0.1)
    assert await jobs.wait_started(2) == ["a", "b"]  # a was not retried
    jobs.finish("b")
    assert await waiting == "b"
    assert scheduler.active == 0


async def test_a_429_within_the_hold_is_still_waited_out_and_retried() -> None:
    clock = FakeClock()
    scheduler = Scheduler(
        max_concurrent=1, clock=clock, sleep=clock.sleep, retry=RetryPolicy(max_wait=20.0)
    )
    jobs = Jobs(scheduler, clock)
    task = await jobs.submit("a", member("ann"))
    jobs.fail_once["a"] = ProviderRateLimitedError("slow down", retry_after=20.0)
    jobs.finish("a")
    assert await clock.wait_sleeps(1) == [20.0]
    clock.advance(20.0)
    assert await task == "a"
    assert jobs.started == ["a", "a"]


async def test_close_drains_the_queue_within_the_grace_then_refuses_new() -> None:
    jobs = Jobs(Scheduler(max_concurrent=1))
    running = await jobs.submit("a", member("ann"))
    queued = await jobs.submit("b", member("bob"))
    await jobs.wait_started(1)

    closing = asyncio.create_task(jobs.scheduler.close(grace=60.0))
    late = await jobs.submit("c", member("cy"))  # acknowledged just before the stop
    jobs.finish("a")
    assert await running == "a"
    await jobs.wait_started(2)
    jobs.finish("b")
    assert await queued == "b"
    await jobs.wait_started(3)
    assert not closing.done()
    jobs.finish("c")
    assert await late == "c"
    await closing
    assert jobs.started == ["a", "b", "c"]
    assert jobs.scheduler.closed and jobs.scheduler.active == 0
    after = await jobs.submit("d", member("dee"))
    with pytest.raises(ShuttingDownError):
        await after


async def test_close_cancels_what_is_still_running_or_queued_after_the_grace() -> None:
    jobs = Jobs(Scheduler(max_concurrent=2))
    stuck = [await jobs.submit(j, member(j)) for j in ("ann", "bob")]
    await jobs.wait_started(2)
    stuck.append(await jobs.submit("cy", member("cy")))

    await jobs.scheduler.close(grace=0.0)

    for task in stuck:
        with pytest.raises(ShuttingDownError):
            await task
    assert jobs.scheduler.active == 0 and jobs.started == ["ann", "bob"]


async def test_a_cancelled_caller_is_still_a_cancellation() -> None:
    # Only the scheduler's own abort turns into ShuttingDownError.
    jobs = Jobs(Scheduler(max_concurrent=1))
    task = await jobs.submit("a", member("ann"))
    await jobs.wait_started(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert jobs.scheduler.active == 0 and jobs.scheduler.running == 0


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        Scheduler(max_concurrent=0)
    with pytest.raises(ConfigError, match="must not be negative"):
        Scheduler(retry=RetryPolicy(max_wait=-1.0))

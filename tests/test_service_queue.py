"""The service with a scheduler and the real SQLite ledger: refusals, cancel and shutdown
refund the hold; progress reports the queue; a 429 is waited out, not charged twice; a 429
asking for a longer wait than the queue may be held fails only its own job."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bot.catalog import load_catalog
from bot.errors import (
    InvalidRequestError,
    JobCancelledError,
    JobTimeoutError,
    PermissionDeniedError,
    ProviderRateLimitedError,
    ProviderWaitTooLongError,
    QueueFullError,
    ShuttingDownError,
    TooManyJobsError,
)
from bot.messages import describe
from bot.models import GenerationResult, JobState, Limits, QueueStatus, Requester
from bot.provider.client import OpenAIImageClient, new_http_client
from bot.retry import RetryPolicy
from bot.scheduler import Scheduler
from bot.service import ImageService
from bot.store.ledger import SqliteLedger
from tests.fakes.clock import FakeClock
from tests.fakes.image_api import FakeImageAPI, rate_limited
from tests.fakes.progress import Recorder
from tests.fakes.provider import ScriptedProvider


def member(user: str, server: str = "G1", *, admin: bool = False) -> Requester:
    return Requester(
        platform="discord", workspace_id=server, channel_id="C1", user_id=user, is_admin=admin
    )


ALICE, BOB, CAROL = member("alice"), member("bob"), member("carol")


@pytest.fixture
async def ledger() -> AsyncIterator[SqliteLedger]:
    ledger = await SqliteLedger.open(":memory:", defaults=Limits(images_per_day=10))
    yield ledger
    await ledger.close()


@pytest.fixture
def provider() -> ScriptedProvider:
    return ScriptedProvider()


def make_service(
    ledger: SqliteLedger, provider: ScriptedProvider, scheduler: Scheduler, **kwargs: float
) -> ImageService:
    return ImageService(
        catalog=load_catalog(), provider=provider, ledger=ledger, scheduler=scheduler, **kwargs
    )


def start(
    service: ImageService, prompt: str, who: Requester, progress: Recorder | None = None
) -> asyncio.Task[GenerationResult]:
    request = service.parse(prompt)
    return asyncio.create_task(service.generate(request, who, progress=progress))


async def images_left(ledger: SqliteLedger, who: Requester) -> int:
    usage = (await ledger.allowance(who)).get("images_per_day")
    assert usage is not None
    return usage.remaining


async def refund_reason(ledger: SqliteLedger, job_id: str | None) -> str | None:
    assert job_id is not None
    record = await ledger.job(job_id)
    assert record.state is JobState.REFUNDED
    return record.refund_reason


async def test_cancel_refunds_a_queued_job_for_its_owner_or_an_admin(
    ledger: SqliteLedger, provider: ScriptedProvider
) -> None:
    service = make_service(ledger, provider, Scheduler(max_concurrent=1))
    gate = provider.gate("first")
    first = start(service, "first", ALICE)
    await provider.wait_calls(1)
    bob_progress, carol_progress = Recorder(), Recorder()
    bobs = start(service, "bob's --n 3", BOB, bob_progress)
    carols = start(service, "carol's", CAROL, carol_progress)
    bob_job = (await bob_progress.wait(1)).job_id
    carol_job = (await carol_progress.wait(1)).job_id
    assert await images_left(ledger, BOB) == 7  # held while queued

    with pytest.raises(PermissionDeniedError):
        await service.cancel(bob_job, ALICE)
    with pytest.raises(PermissionDeniedError):  # an admin of another server
        await service.cancel(bob_job, member("root", server="G2", admin=True))
    await service.cancel(bob_job, BOB)
    with pytest.raises(JobCancelledError) as cancelled:
        await bobs
    assert cancelled.value.job_id == bob_job
    assert await refund_reason(ledger, bob_job) == "cancelled"
    assert await images_left(ledger, BOB) == 10
    with pytest.raises(InvalidRequestError):  # already gone
        await service.cancel(bob_job, BOB)

    await service.cancel(carol_job, member("mod", admin=True))
    with pytest.raises(JobCancelledError):
        await carols
    assert await refund_reason(ledger, carol_job) == "cancelled"

    gate.set()
    result = await first
    assert (await ledger.job(result.job_id)).state is JobState.CHARGED
    assert [c.prompt for c in provider.calls] == ["first"]


async def test_a_running_job_cannot_be_cancelled(
    ledger: SqliteLedger, provider: ScriptedProvider
) -> None:
    service = make_service(ledger, provider, Scheduler(max_concurrent=1))
    gate = provider.gate("busy")
    progress = Recorder()
    task = start(service, "busy", ALICE, progress)
    status = await progress.wait(1)
    assert status.running

    with pytest.raises(InvalidRequestError, match="no longer waiting"):
        await service.cancel(status.job_id, ALICE)
    gate.set()
    assert len((await task).images) == 1
    assert await images_left(ledger, ALICE) == 9


async def test_a_job_over_the_per_user_cap_is_refused_and_refunded(
    ledger: SqliteLedger, provider: ScriptedProvider
) -> None:
    service = make_service(ledger, provider, Scheduler(max_concurrent=4, max_per_user=1))
    gate = provider.gate("first")
    first = start(service, "first", ALICE)
    await provider.wait_calls(1)

    with pytest.raises(TooManyJobsError) as refused:
        await service.generate(service.parse("second --n 2"), ALICE)
    assert refused.value.limit == 1
    assert await refund_reason(ledger, refused.value.job_id) == "too_many_jobs"
    assert await images_left(ledger, ALICE) == 9  # only the running job is held
    bobs = await service.generate(service.parse("bob's"), BOB)  # others are not affected

    gate.set()
    await first
    assert len(bobs.images) == 1
    assert len(provider.calls) == 2


async def test_a_full_queue_refuses_and_refunds(
    ledger: SqliteLedger, provider: ScriptedProvider
) -> None:
    service = make_service(ledger, provider, Scheduler(max_concurrent=1, max_queue=1))
    gate = provider.gate("first")
    first = start(service, "first", ALICE)
    await provider.wait_calls(1)
    progress = Recorder()
    queued = start(service, "second", BOB, progress)
    await progress.wait(1)

    with pytest.raises(QueueFullError) as full:
        await service.generate(service.parse("third"), CAROL)
    assert full.value.capacity == 1
    assert await refund_reason(ledger, full.value.job_id) == "queue_full"
    assert await images_left(ledger, CAROL) == 10

    gate.set()
    await first
    await queued
    assert [c.prompt for c in provider.calls] == ["first", "second"]


async def test_progress_counts_down_then_says_running_and_its_failures_are_ignored(
    ledger: SqliteLedger, provider: ScriptedProvider
) -> None:
    service = make_service(ledger, provider, Scheduler(max_concurrent=1))
    gates = {p: provider.gate(p) for p in ("p0", "p1", "p2")}
    tasks = [start(service, p, member(f"u{i}")) for i, p in enumerate(gates)]
    await provider.wait_calls(1)
    seen = Recorder()

    async def flaky(status: QueueStatus) -> None:
        await seen(status)
        raise ConnectionError("the platform is down for a moment")

    mine = asyncio.create_task(service.generate(service.parse("mine"), ALICE, progress=flaky))
    assert (await seen.wait(1)).ahead == 2
    for count, prompt in enumerate(gates, start=2):
        gates[prompt].set()
        await seen.wait(count)
    result = await mine

    assert [(s.ahead, s.running) for s in seen.statuses] == [
        (2, False),
        (1, False),
        (0, False),
        (0, True),
    ]
    assert {s.job_id for s in seen.statuses} == {result.job_id}
    assert (await ledger.job(result.job_id)).state is JobState.CHARGED
    await asyncio.gather(*tasks)


async def test_a_429_lowers_concurrency_and_the_job_runs_after_retry_after(
    ledger: SqliteLedger, provider: ScriptedProvider
) -> None:
    clock = FakeClock()
    scheduler = Scheduler(max_concurrent=4, clock=clock, sleep=clock.sleep)
    service = make_service(ledger, provider, scheduler)
    provider.script.append(ProviderRateLimitedError("429", retry_after=3.0))
    progress = Recorder()
    task = start(service, "a fox", ALICE, progress)

    assert (await progress.wait(2)) == QueueStatus(progress.statuses[0].job_id, 0, False, None)
    assert scheduler.concurrency == 2
    assert await clock.wait_sleeps(1) == [3.0]
    assert len(provider.calls) == 1
    clock.advance(3.0)
    result = await task

    assert len(provider.calls) == 2
    record = await ledger.job(result.job_id)
    assert (record.state, record.charged_images) == (JobState.CHARGED, 1)
    assert await images_left(ledger, ALICE) == 9


async def test_shutdown_drains_queued_and_running_jobs_then_refuses_new(
    ledger: SqliteLedger, provider: ScriptedProvider
) -> None:
    service = make_service(ledger, provider, Scheduler(max_concurrent=1))
    gate = provider.gate("running")
    running = start(service, "running --n 2", ALICE)
    await provider.wait_calls(1)
    queued = start(service, "queued", BOB, Recorder())

    stopping = asyncio.create_task(service.shutdown(grace=60.0))
    # Still draining: an event acknowledged just before the stop is taken and queued too.
    late = start(service, "late", CAROL, Recorder())
    assert not stopping.done()

    gate.set()
    for task in (running, queued, late):
        record = await ledger.job((await task).job_id)
        assert record.state is JobState.CHARGED
    await stopping
    assert [c.prompt for c in provider.calls] == ["running", "queued", "late"]
    with pytest.raises(ShuttingDownError) as refused:
        await service.generate(service.parse("after"), BOB)
    assert refused.value.job_id is None  # refused before any hold
    assert await images_left(ledger, BOB) == 9


async def test_shutdown_cancels_and_refunds_what_outlives_the_grace(
    ledger: SqliteLedger, provider: ScriptedProvider
) -> None:
    service = make_service(ledger, provider, Scheduler(max_concurrent=2))
    provider.gate("stuck")
    stuck = [start(service, "stuck", who) for who in (ALICE, BOB)]
    await provider.wait_calls(2)
    waiting = start(service, "waiting", CAROL)

    await service.shutdown(grace=0.0)

    for task in (*stuck, waiting):
        with pytest.raises(ShuttingDownError) as stopped:
            await task
        assert await refund_reason(ledger, stopped.value.job_id) == "shutdown"
    assert await images_left(ledger, ALICE) == 10 and await images_left(ledger, CAROL) == 10
    assert provider.running == 0
    assert [c.prompt for c in provider.calls] == ["stuck", "stuck"]


async def test_the_job_budget_counts_the_queue_wait_so_no_hold_outlives_it(
    ledger: SqliteLedger, provider: ScriptedProvider
) -> None:
    # JOB_TIMEOUT 0.05 s: a job gets 0.04 s from its hold, queue wait included, so the
    # stale-hold sweep (holds older than JOB_TIMEOUT) can never refund a live job. The slot
    # is taken by a job of a service without a timeout, sharing the scheduler.
    scheduler = Scheduler(max_concurrent=1)
    patient = make_service(ledger, provider, scheduler)
    hasty = make_service(ledger, provider, scheduler, job_timeout=0.05)
    gate = provider.gate("slow")
    slow = start(patient, "slow", ALICE)
    await provider.wait_calls(1)

    with pytest.raises(JobTimeoutError) as late:
        await hasty.generate(hasty.parse("waiting"), BOB)
    assert await refund_reason(ledger, late.value.job_id) == "job_timeout"
    assert await images_left(ledger, BOB) == 10
    assert scheduler.queued == 0

    gate.set()
    await slow
    assert [c.prompt for c in provider.calls] == ["slow"]


# The provider client and the scheduler get the same cap, as ``adapters.runtime`` wires them;
# small here so that the bounded hold passes quickly in real time.
RETRY_CAP = 0.5


@pytest.mark.parametrize(
    ("retry_after", "minutes"),
    [("3600", 60), ("90", 2), ("1", 1), ("Thu, 01 Jan 2099 00:00:00 GMT", None)],
    ids=["an-hour", "rounded-up", "at-least-a-minute", "a-date-in-2099"],
)
@pytest.mark.e2e
async def test_a_long_retry_after_fails_that_job_refunded_and_the_next_job_still_runs(
    ledger: SqliteLedger, image_api: FakeImageAPI, retry_after: str, minutes: int | None
) -> None:
    retry = RetryPolicy(provider_retries=3, max_wait=RETRY_CAP)
    async with new_http_client(timeout=10.0) as http:
        provider = OpenAIImageClient(
            http=http,
            base_url=image_api.base_url,
            api_key=SecretStr(image_api.api_key),
            timeout=10.0,
            retry=retry,
            max_download_bytes=5 * 1024 * 1024,
        )
        scheduler = Scheduler(max_concurrent=4, retry=retry)
        service = ImageService(
            catalog=load_catalog(), provider=provider, ledger=ledger, scheduler=scheduler
        )
        image_api.script(rate_limited(retry_after=retry_after))

        async with asyncio.timeout(5):
            with pytest.raises(ProviderWaitTooLongError) as failed:
                await service.generate(service.parse("a fox"), ALICE)
        text = describe(failed.value)
        shown = re.fullmatch(
            r"The image service is rate-limited, try again in ([\d,]+) minutes?\. "
            r"Nothing was charged\.",
            text,
        )
        assert shown, text
        if minutes is not None:
            assert shown[0].count(f" {minutes} minute{'s' if minutes > 1 else ''}.") == 1
        else:  # decades away: a very long Retry-After, still in minutes
            assert int(shown[1].replace(",", "")) > 30_000_000
        assert (await refund_reason(ledger, failed.value.job_id)).startswith("provider_error")
        assert await images_left(ledger, ALICE) == 10
        assert len(image_api.generations) == 1  # the client did not sit out the wait

        async with asyncio.timeout(5):  # the queue is held for the cap, not for the 429's wait
            result = await service.generate(service.parse("a badger"), BOB)
        assert len(result.images) == 1
        assert (await ledger.job(result.job_id)).state is JobState.CHARGED
        assert len(image_api.generations) == 2

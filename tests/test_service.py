"""The generation service with the real SQLite ledger: hold before the provider, charge what
was delivered, refund everything else."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from bot.catalog import load_catalog
from bot.errors import (
    ContentRejectedError,
    DeliveryError,
    DuplicateRequestError,
    InvalidRequestError,
    JobTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
)
from bot.models import Allowance, GenerationResult, JobState, Limits, Requester
from bot.provider.preview import PreviewProvider
from bot.service import VARIATIONS, ImageService
from bot.store.ledger import SqliteLedger
from tests.fakes.provider import ScriptedProvider

ALICE = Requester(platform="discord", workspace_id="G1", channel_id="C1", user_id="alice")
BOB = Requester(platform="discord", workspace_id="G1", channel_id="C1", user_id="bob")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
async def ledger() -> AsyncIterator[SqliteLedger]:
    ledger = await SqliteLedger.open(":memory:", defaults=Limits(images_per_day=10))
    yield ledger
    await ledger.close()


@pytest.fixture
def provider() -> ScriptedProvider:
    return ScriptedProvider()


@pytest.fixture
def service(ledger: SqliteLedger, provider: ScriptedProvider) -> ImageService:
    return ImageService(catalog=load_catalog(), provider=provider, ledger=ledger)


def images_left(allowance: Allowance) -> int:
    usage = allowance.get("images_per_day")
    assert usage is not None
    return usage.remaining


async def test_generate_delivers_images_and_charges_their_price(
    service: ImageService, ledger: SqliteLedger
) -> None:
    request = service.parse("a red fox in snow --n 2 --size 1792x1024")
    result = await service.generate(request, ALICE)

    assert len(result.images) == 2
    for image in result.images:
        decoded = Image.open(io.BytesIO(image.data))
        assert decoded.size == (1792, 1024)
    # flux: $0.003 at 1024x1024, scaled by megapixels (1792x1024 = 1.75 MP), x2 images.
    assert result.cost_micros == 2 * 5_250
    assert result.seed is not None
    record = await ledger.job(result.job_id)
    assert record.state is JobState.CHARGED
    assert (record.charged_images, record.charged_micros) == (2, 10_500)
    assert record.request.seed == result.seed
    assert result.allowance is not None
    assert images_left(result.allowance) == 8


async def test_preview_jobs_are_free_but_count_images(ledger: SqliteLedger) -> None:
    service = ImageService(catalog=load_catalog(), provider=PreviewProvider(), ledger=ledger)
    result = await service.generate(service.parse("a lighthouse --n 3"), ALICE)

    assert result.preview and result.cost_micros == 0
    assert len(result.images) == 3
    assert images_left(await service.allowance(ALICE)) == 7


async def test_content_rejection_refunds_the_hold(
    service: ImageService, provider: ScriptedProvider, ledger: SqliteLedger
) -> None:
    provider.script.append(ContentRejectedError("content_policy_violation", status=400))
    with pytest.raises(ContentRejectedError):
        await service.generate(service.parse("something forbidden --n 4"), ALICE)

    assert images_left(await service.allowance(ALICE)) == 10
    report = await ledger.usage(since=EPOCH)
    assert report.total_images == 0 and report.total_micros == 0


async def test_provider_failure_refunds_and_the_next_job_runs(
    service: ImageService, provider: ScriptedProvider
) -> None:
    provider.script.append(ProviderUnavailableError("502 from provider", status=502))
    with pytest.raises(ProviderUnavailableError):
        await service.generate(service.parse("a cat"), ALICE)
    result = await service.generate(service.parse("a cat"), ALICE)
    assert len(result.images) == 1
    assert images_left(await service.allowance(ALICE)) == 9


async def test_cancelled_job_is_refunded(
    service: ImageService, provider: ScriptedProvider, ledger: SqliteLedger
) -> None:
    provider.script.append("block")
    task = asyncio.create_task(service.generate(service.parse("slow one --n 2"), ALICE))
    await provider.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert images_left(await service.allowance(ALICE)) == 10
    report = await ledger.usage(since=EPOCH)
    assert report.total_images == 0


async def test_partial_delivery_charges_only_delivered_images(
    service: ImageService, provider: ScriptedProvider, ledger: SqliteLedger
) -> None:
    provider.script.append(1)
    result = await service.generate(service.parse("two foxes --n 2"), ALICE)

    assert len(result.images) == 1
    assert result.cost_micros == 3_000
    record = await ledger.job(result.job_id)
    assert (record.charged_images, record.charged_micros) == (1, 3_000)
    assert images_left(await service.allowance(ALICE)) == 9
    # What the result tells the user is left matches the ledger once charged.
    assert result.allowance is not None and images_left(result.allowance) == 9


async def test_redelivered_event_runs_once(
    service: ImageService, provider: ScriptedProvider
) -> None:
    request = service.parse("a heron")
    await service.generate(request, ALICE, event_id="interaction-1")
    with pytest.raises(DuplicateRequestError):
        await service.generate(request, ALICE, event_id="interaction-1")

    assert len(provider.calls) == 1
    assert images_left(await service.allowance(ALICE)) == 9


async def test_quota_refusal_never_calls_the_provider(
    service: ImageService, provider: ScriptedProvider
) -> None:
    await service.generate(service.parse("first --n 4"), ALICE)
    await service.generate(service.parse("second --n 4"), ALICE)
    with pytest.raises(QuotaExceededError) as caught:
        await service.generate(service.parse("third --n 4"), ALICE)

    assert caught.value.limit == "images_per_day"
    assert (caught.value.used, caught.value.allowed) == (8, 10)
    assert len(provider.calls) == 2
    # Another user's allowance is untouched.
    assert images_left(await service.allowance(BOB)) == 10


async def test_reroll_repeats_the_job_with_a_new_seed_for_the_clicker(
    service: ImageService, ledger: SqliteLedger
) -> None:
    first = await service.generate(service.parse("a koi pond --ar 16:9 --model sdxl"), ALICE)
    again = await service.reroll(first.job_id, BOB)

    assert again.job_id != first.job_id
    assert again.request.prompt == "a koi pond"
    assert (again.request.model, again.request.size) == ("stability/sdxl", "1792x1024")
    assert again.request.seed != first.request.seed
    assert (await ledger.job(again.job_id)).requester.user_id == "bob"
    assert images_left(await service.allowance(ALICE)) == 9
    assert images_left(await service.allowance(BOB)) == 9


async def test_variations_draw_new_images_of_the_same_prompt_for_the_clicker(
    service: ImageService,
) -> None:
    first = await service.generate(service.parse("a koi pond --model sdxl"), ALICE)
    varied = await service.reroll(first.job_id, BOB, n=VARIATIONS)
    spec = service.catalog.get("stability/sdxl")
    assert len(varied.images) == varied.request.n == min(VARIATIONS, spec.max_n) > 1
    assert varied.request.prompt == "a koi pond"
    assert images_left(await service.allowance(BOB)) == 10 - varied.request.n


def test_price_scales_by_megapixels(service: ImageService) -> None:
    assert service.price(service.parse("x --model flux")) == 3_000
    assert service.price(service.parse("x --model flux --size 2048x2048 --n 2")) == 24_000
    assert service.price(service.parse("x --model imagen-ultra --n 4")) == 52_000


async def test_delivery_failure_refunds_and_success_charges_after_delivery(
    service: ImageService, ledger: SqliteLedger
) -> None:
    delivered: list[JobState] = []

    async def refuse(result: GenerationResult) -> None:
        raise DeliveryError("the platform refused the upload")

    async def accept(result: GenerationResult) -> None:
        # While the adapter posts the images the job is still only held.
        delivered.append((await ledger.job(result.job_id)).state)

    with pytest.raises(DeliveryError) as caught:
        await service.generate(service.parse("a bridge --n 2"), ALICE, deliver=refuse)
    assert (await ledger.job(caught.value.job_id or "")).state is JobState.REFUNDED
    assert images_left(await service.allowance(ALICE)) == 10

    result = await service.generate(service.parse("a bridge --n 2"), ALICE, deliver=accept)
    assert delivered == [JobState.HELD]
    assert (await ledger.job(result.job_id)).state is JobState.CHARGED
    assert images_left(await service.allowance(ALICE)) == 8


async def test_a_job_past_its_time_budget_is_refunded_before_the_sweep_could(
    ledger: SqliteLedger, provider: ScriptedProvider
) -> None:
    service = ImageService(
        catalog=load_catalog(), provider=provider, ledger=ledger, job_timeout=0.05
    )
    provider.script.append("block")
    with pytest.raises(JobTimeoutError) as caught:
        await service.generate(service.parse("never finishes"), ALICE)

    assert caught.value.job_id is not None
    record = await ledger.job(caught.value.job_id)
    assert record.state is JobState.REFUNDED
    assert images_left(await service.allowance(ALICE)) == 10


async def test_cancel_refunds_a_job_no_process_runs_any_more(tmp_path: Path) -> None:
    """A Cancel click reaching a process other than the one that queued the job: refunded if
    that process has stopped, refused while it still runs the job."""
    path = tmp_path / "shared.db"
    gone = await SqliteLedger.open(path, defaults=Limits(images_per_day=2))
    alive = await SqliteLedger.open(path, defaults=Limits(images_per_day=2))
    here = await SqliteLedger.open(path, defaults=Limits(images_per_day=2))
    service = ImageService(catalog=load_catalog(), provider=PreviewProvider(), ledger=here)
    request = service.parse("a lighthouse")
    try:
        orphan = await gone.hold(requester=ALICE, request=request, cost_micros=0)
        running = await alive.hold(requester=ALICE, request=request, cost_micros=0)
        await gone.close()  # its process stops; its sweep-to-be has not run yet
        await service.cancel(orphan.job_id, ALICE)
        record = await here.job(orphan.job_id)
        assert (record.state, record.refund_reason) == (JobState.REFUNDED, "interrupted")
        with pytest.raises(InvalidRequestError, match="no longer waiting"):
            await service.cancel(running.job_id, ALICE)
        assert (await here.job(running.job_id)).state is JobState.HELD
    finally:
        await alive.close()
        await here.close()

"""The retry policy (``bot.retry``): the worst case its docstring states is what a 429 storm
really costs, through the real provider client and the scheduler against the fake image API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bot.catalog import load_catalog
from bot.errors import ConfigError, ProviderRateLimitedError
from bot.models import JobState, Limits, Requester
from bot.provider.client import OpenAIImageClient, new_http_client
from bot.retry import RetryPolicy
from bot.scheduler import Scheduler
from bot.service import ImageService
from bot.store.ledger import SqliteLedger
from tests.fakes.image_api import FakeImageAPI, rate_limited

pytestmark = pytest.mark.e2e  # the real client against the fake image API on a socket

ALICE = Requester(platform="discord", workspace_id="G1", channel_id="C1", user_id="alice")


class InstantTime:
    """A clock whose ``sleep`` moves it on at once: the client's backoff and the scheduler's
    hold pass without waiting, and each wait asked for is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)  # a turn of the loop, as a real sleep gives


@pytest.fixture
async def ledger() -> AsyncIterator[SqliteLedger]:
    async with await SqliteLedger.open(":memory:", defaults=Limits(images_per_day=10)) as ledger:
        yield ledger


def test_the_defaults_cost_at_most_8_attempts_and_4_for_a_one_off_command() -> None:
    policy = RetryPolicy()
    assert (policy.provider_retries, policy.requeues, policy.max_wait) == (3, 1, 20.0)
    assert policy.worst_case_attempts == 8
    assert policy.one_off().worst_case_attempts == 4
    assert RetryPolicy(provider_retries=0, requeues=0).worst_case_attempts == 1
    assert [policy.backoff(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert RetryPolicy(max_wait=3.0).backoff(5) == 3.0


@pytest.mark.parametrize("field", ["provider_retries", "requeues", "max_wait", "default_hold"])
def test_negative_limits_are_config_errors(field: str) -> None:
    with pytest.raises(ConfigError, match="must not be negative"):
        RetryPolicy(**{field: -1})


@pytest.mark.parametrize(
    "policy", [RetryPolicy(), RetryPolicy().one_off(), RetryPolicy(provider_retries=1)]
)
async def test_a_429_storm_costs_exactly_the_worst_case(
    ledger: SqliteLedger, image_api: FakeImageAPI, policy: RetryPolicy
) -> None:
    time = InstantTime()
    image_api.script(*[rate_limited(retry_after="1")] * 20)
    async with new_http_client(timeout=10.0) as http:
        provider = OpenAIImageClient(
            http=http,
            base_url=image_api.base_url,
            api_key=SecretStr(image_api.api_key),
            timeout=10.0,
            retry=policy,
            max_download_bytes=5 * 1024 * 1024,
            allow_private_urls=True,
            sleep=time.sleep,
            jitter=lambda: 0.0,
        )
        scheduler = Scheduler(max_concurrent=2, clock=time, sleep=time.sleep, retry=policy)
        service = ImageService(
            catalog=load_catalog(), provider=provider, ledger=ledger, scheduler=scheduler
        )
        async with asyncio.timeout(10):
            with pytest.raises(ProviderRateLimitedError) as failed:
                await service.generate(service.parse("a fox"), ALICE)

    assert len(image_api.generations) == policy.worst_case_attempts
    assert failed.value.job_id is not None
    assert (await ledger.job(failed.value.job_id)).state is JobState.REFUNDED

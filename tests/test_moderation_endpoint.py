"""The optional moderation endpoint (``MODERATION_API_BASE_URL``), against a local fake that
speaks OpenAI's ``POST /v1/moderations``: flagged prompts are refused, clean ones pass, and
when the endpoint fails ``MODERATION_FAIL_POLICY`` decides, with a WARNING that never shows
the key."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr

from adapters.runtime import open_runtime
from bot.config import Settings
from bot.errors import PromptRefusedError
from bot.models import GenerationRequest, Requester
from bot.moderation.endpoint import FailPolicy, ModerationClient
from bot.moderation.screening import Moderation
from bot.store.ledger import SqliteLedger
from bot.store.moderation import SqliteModerationStore
from tests.fakes.loopback import serve_loopback
from tests.fakes.moderation_api import (
    FAKE_MODERATION_KEY,
    FakeModerationAPI,
    ModerationError,
    ModerationRaw,
    ModerationStall,
)

pytestmark = pytest.mark.e2e

ALICE = Requester(platform="discord", workspace_id="G1", channel_id="C1", user_id="alice")
FLUX = "black-forest-labs/flux-1-schnell"


def req(prompt: str, negative: str | None = None) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, model=FLUX, size="1024x1024", negative_prompt=negative)


@pytest.fixture
async def api() -> AsyncIterator[FakeModerationAPI]:
    async with FakeModerationAPI() as api:
        yield api


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def ledger() -> AsyncIterator[SqliteLedger]:
    ledger = await SqliteLedger.open(":memory:")
    yield ledger
    await ledger.close()


def moderation(
    ledger: SqliteLedger,
    http: httpx.AsyncClient,
    base_url: str,
    *,
    policy: FailPolicy = "refuse",
    key: str = FAKE_MODERATION_KEY,
    timeout: float = 5.0,
) -> Moderation:
    client = ModerationClient(
        http=http,
        base_url=base_url,
        api_key=SecretStr(key),
        model="omni-moderation-latest",
        fail_policy=policy,
        timeout=timeout,
    )
    return Moderation(store=SqliteModerationStore.on(ledger), client=client)


async def test_a_flagged_prompt_is_refused_with_its_categories(
    api: FakeModerationAPI, http: httpx.AsyncClient, ledger: SqliteLedger
) -> None:
    mod = moderation(ledger, http, api.base_url)
    with pytest.raises(PromptRefusedError) as caught:
        await mod.screen(req("a battlefield full of gore"), ALICE)

    assert caught.value.source == "moderation"
    assert caught.value.rule == "violence, violence/graphic"
    sent = api.requests[0]
    assert sent.headers["authorization"] == f"Bearer {FAKE_MODERATION_KEY}"
    assert sent.json == {"model": "omni-moderation-latest", "input": ["a battlefield full of gore"]}
    assert caught.value.review_id is not None
    review = await mod.review(caught.value.review_id)
    assert (review.source, review.rule, review.state) == (
        "moderation",
        caught.value.rule,
        "refused",
    )
    (entry,) = await mod.store.log("discord", "G1", since=ledger.now().replace(year=2000))
    assert entry.prompt == "a battlefield full of gore"


async def test_a_clean_prompt_passes_and_the_negative_prompt_is_checked_too(
    api: FakeModerationAPI, http: httpx.AsyncClient, ledger: SqliteLedger
) -> None:
    mod = moderation(ledger, http, api.base_url)
    await mod.screen(req("a red fox in snow", "blurry"), ALICE)
    assert api.requests[-1].json["input"] == ["a red fox in snow", "blurry"]

    with pytest.raises(PromptRefusedError) as caught:
        await mod.screen(req("a knight", "no gore please"), ALICE)
    assert caught.value.source == "moderation"


async def test_a_bare_origin_gets_v1(
    api: FakeModerationAPI, http: httpx.AsyncClient, ledger: SqliteLedger
) -> None:
    mod = moderation(ledger, http, api.base_url.removesuffix("/v1"))
    await mod.screen(req("a lighthouse"), ALICE)
    assert len(api.requests) == 1


async def _closed_port_url() -> str:
    runner, port = await serve_loopback(web.Application())
    await runner.cleanup()
    return f"http://127.0.0.1:{port}/v1"


FAILURES = {
    "server error": ModerationError(500, "The server had an error", "server_error"),
    "bad gateway": ModerationError(502, "Bad gateway.", "cf_bad_gateway"),
    "not json": ModerationRaw(b"<html>oops</html>"),
    "no results": ModerationRaw(b'{"id": "modr-1", "model": "m", "results": []}'),
    "no flagged field": ModerationRaw(b'{"results": [{"categories": {}}]}'),
}


@pytest.mark.parametrize("policy", ["refuse", "allow"])
@pytest.mark.parametrize("failure", [*FAILURES, "wrong key", "connect error", "timeout"])
async def test_when_the_endpoint_fails_the_policy_decides_and_the_log_says_so(
    api: FakeModerationAPI,
    http: httpx.AsyncClient,
    ledger: SqliteLedger,
    caplog: pytest.LogCaptureFixture,
    failure: str,
    policy: FailPolicy,
) -> None:
    base, key, timeout = api.base_url, FAKE_MODERATION_KEY, 5.0
    if failure in FAILURES:
        api.script(FAILURES[failure])
    elif failure == "wrong key":
        key = "sk-mod-revoked-0000111122223333"
    elif failure == "connect error":
        base = await _closed_port_url()
    else:
        api.script(ModerationStall())
        timeout = 0.2
    mod = moderation(ledger, http, base, policy=policy, key=key, timeout=timeout)
    caplog.set_level(logging.DEBUG)

    if policy == "refuse":
        with pytest.raises(PromptRefusedError) as caught:
            await mod.screen(req("a calm lake"), ALICE)
        assert caught.value.source == "moderation"
        assert "unavailable" in caught.value.rule
        assert key not in str(caught.value) and key not in caught.value.rule
    else:
        await mod.screen(req("a calm lake"), ALICE)

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "MODERATION_FAIL_POLICY=" + policy in text
    assert ("refused" if policy == "refuse" else "allowed") in text
    assert key not in caplog.text
    assert "a calm lake" not in text  # prompts only at DEBUG


def test_settings_read_the_moderation_variables() -> None:
    settings = Settings(
        moderation_api_base_url=" ",
        moderation_api_key="",
        moderation_fail_policy="ALLOW",
    )
    assert settings.moderation_api_base_url is None
    assert settings.moderation_api_key is None
    assert settings.moderation_fail_policy == "allow"
    assert Settings().moderation_fail_policy == "refuse"
    assert Settings().moderation_model == "omni-moderation-latest"
    assert "sk-secret" not in repr(Settings(moderation_api_key="sk-secret"))


async def test_the_runtime_screens_through_the_configured_endpoint(
    api: FakeModerationAPI,
) -> None:
    settings = Settings(
        database_url="sqlite://:memory:",
        moderation_api_base_url=api.base_url,
        moderation_api_key=FAKE_MODERATION_KEY,
    )
    async with open_runtime(settings, generates=False) as runtime:
        assert runtime.moderation is not None
        assert runtime.service.moderation is runtime.moderation
        request = runtime.service.parse("a gore fest")
        with pytest.raises(PromptRefusedError):
            await runtime.service.generate(request, ALICE)
    assert len(api.requests) == 1

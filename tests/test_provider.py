"""The OpenAI-compatible client, driven through the real httpx client against the fake image
API on 127.0.0.1: request shape, results, every error mapping, bounded retries, timeouts, byte
caps, the byte budget and decode turns (slow answers hold neither the loop nor other jobs),
answers cut off, images larger than asked, which URLs are fetched, and the API key never
leaking."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import io
import ipaddress
import json
import logging
import random
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from pydantic import SecretStr

from bot.errors import (
    ConfigError,
    ContentRejectedError,
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    ProviderRateLimitedError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from bot.models import GeneratedImage, GenerationRequest, ModelSpec
from bot.provider.address import IPAddress, blocked_reason
from bot.provider.client import OpenAIImageClient, new_http_client
from bot.retry import RetryPolicy
from tests.fakes.image_api import (
    Bomb,
    CutBody,
    DeadUrl,
    ErrorReply,
    FakeImageAPI,
    HeldBody,
    Images,
    NotAnImage,
    OversizedDownload,
    RawReply,
    Redirect,
    Stall,
    UrlItems,
    bad_gateway,
    billing_hard_limit_reached,
    content_policy_violation,
    forbidden_region,
    insufficient_quota,
    invalid_api_key,
    moderation_blocked,
    rate_limited,
    server_error,
    service_unavailable,
)
from tests.fakes.lag import LoopLag
from tests.fakes.observer import Observed

pytestmark = pytest.mark.e2e

SPEC = ModelSpec(
    id="black-forest-labs/flux-1-schnell",
    label="FLUX.1 [schnell]",
    aliases=("flux",),
    sizes=("64x64", "96x48", "1792x1024"),
    max_n=4,
    price_micros=3_000,
)
NO_EXTRAS = replace(
    SPEC, id="google/imagen-4-fast", supports_seed=False, supports_negative_prompt=False
)
FOX = GenerationRequest(prompt="a red fox in snow", model=SPEC.id, size="96x48", n=1, seed=42)


class SleepRecorder:
    """Stands in for ``asyncio.sleep`` between retries: records the delay, returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with new_http_client(timeout=5.0) as client:
        yield client


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_client(
    http: httpx.AsyncClient, image_api: FakeImageAPI, sleeps: SleepRecorder
) -> Callable[..., OpenAIImageClient]:
    def make(**overrides: Any) -> OpenAIImageClient:
        options: dict[str, Any] = {
            "http": http,
            "base_url": image_api.base_url,
            "api_key": SecretStr(image_api.api_key),
            "timeout": 5.0,
            "retry": RetryPolicy(provider_retries=2),
            "max_download_bytes": 5 * 1024 * 1024,
            "allow_private_urls": True,  # the fake's URLs are on 127.0.0.1
            "sleep": sleeps,
            "jitter": lambda: 0.0,
        }
        options.update(overrides)
        return OpenAIImageClient(**options)

    return make


def decoded(image: GeneratedImage) -> tuple[str | None, tuple[int, int]]:
    """The format and size Pillow finds when it decodes the image's bytes."""
    with Image.open(io.BytesIO(image.data)) as opened:
        opened.load()
        return opened.format, opened.size


# -- success ------------------------------------------------------------------------------


async def test_b64_images_come_back_decoded_with_their_size_and_seed(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    images = await make_client().generate(replace(FOX, n=2), SPEC)

    assert len(images) == 2
    for image in images:
        assert (image.mime_type, image.width, image.height, image.seed) == ("image/png", 96, 48, 42)
        assert decoded(image) == ("PNG", (96, 48))
        assert image.revised_prompt is None
    assert images[0].data != images[1].data
    assert image_api.downloads == []


async def test_url_items_are_downloaded_at_once_without_the_key(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    image_api.script(Images(as_url=True))

    images = await make_client().generate(replace(FOX, n=3), SPEC)

    assert [decoded(i) for i in images] == [("PNG", (96, 48))] * 3
    assert len(image_api.downloads) == 3
    assert all("authorization" not in d.headers for d in image_api.downloads)


async def test_the_request_has_the_openai_shape_and_a_bearer_key(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    request = replace(FOX, size="1792x1024", n=2, seed=7, negative_prompt="text, watermark")

    images = await make_client().generate(request, SPEC)

    (sent,) = image_api.generations
    assert sent.json == {
        "model": "black-forest-labs/flux-1-schnell",
        "prompt": "a red fox in snow",
        "n": 2,
        "size": "1792x1024",
        "response_format": "b64_json",
        "seed": 7,
        "negative_prompt": "text, watermark",
    }
    assert b'"size":"1792x1024"' in sent.body.replace(b" ", b"")
    assert sent.headers["authorization"] == f"Bearer {image_api.api_key}"
    assert sent.headers["content-type"] == "application/json"
    assert [(i.width, i.height) for i in images] == [(1792, 1024)] * 2


async def test_seed_and_negative_prompt_are_left_out_when_the_model_does_not_take_them(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    client = make_client()
    await client.generate(replace(FOX, negative_prompt="blur"), NO_EXTRAS)
    await client.generate(replace(FOX, seed=None, negative_prompt=None), SPEC)
    await client.generate(replace(FOX, negative_prompt=""), SPEC)

    bodies = [r.json for r in image_api.generations]
    assert bodies[0]["model"] == "google/imagen-4-fast"
    assert "seed" not in bodies[0] and "negative_prompt" not in bodies[0]
    assert "seed" not in bodies[1] and "negative_prompt" not in bodies[1]
    assert bodies[2]["seed"] == 42 and "negative_prompt" not in bodies[2]


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_a_base_url_without_a_path_gets_v1(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI, suffix: str
) -> None:
    client = make_client(base_url=image_api.origin + suffix)

    images = await client.generate(FOX, SPEC)

    assert client.endpoint == f"{image_api.origin}/v1/images/generations"
    assert len(images) == 1 and len(image_api.generations) == 1


async def test_revised_prompt_and_real_format_are_reported(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    revised = "A red fox leaping through deep snow"
    image_api.script(Images(revised_prompt=revised, image_format="JPEG"))

    (image,) = await make_client().generate(FOX, SPEC)

    assert image.mime_type == "image/jpeg" and image.extension == "jpg"
    assert decoded(image) == ("JPEG", (96, 48))
    assert image.revised_prompt == revised


async def test_fewer_images_than_asked_are_delivered_as_they_are(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    image_api.script(Images(count=1), Images(count=4))
    client = make_client()

    assert len(await client.generate(replace(FOX, n=2), SPEC)) == 1
    assert len(await client.generate(replace(FOX, n=2), SPEC)) == 2


# -- errors that are never retried ----------------------------------------------------------


@pytest.mark.parametrize("answer", [content_policy_violation(), moderation_blocked()])
async def test_content_refusals_are_content_rejected_and_not_retried(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI, answer: ErrorReply
) -> None:
    image_api.script(answer)

    with pytest.raises(ContentRejectedError) as caught:
        await make_client().generate(FOX, SPEC)

    assert caught.value.status == 400
    assert str(answer.code) in caught.value.detail
    assert caught.value.request_id and caught.value.request_id.startswith("req_")
    assert len(image_api.generations) == 1


@pytest.mark.parametrize("answer", [insufficient_quota(), billing_hard_limit_reached()])
async def test_out_of_credit_is_a_quota_error_and_not_retried(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    sleeps: SleepRecorder,
    answer: ErrorReply,
) -> None:
    image_api.script(answer)

    with pytest.raises(ProviderQuotaError) as caught:
        await make_client().generate(FOX, SPEC)

    assert caught.value.status == answer.status
    assert len(image_api.generations) == 1 and sleeps.delays == []


async def test_a_wrong_key_is_an_auth_error_logged_for_the_operator(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(api_key=SecretStr("sk-wrong-key-000000000000000000000000"))

    with pytest.raises(ProviderAuthError) as caught:
        await client.generate(FOX, SPEC)

    assert caught.value.status == 401 and "invalid_api_key" in caught.value.detail
    assert len(image_api.generations) == 1
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and r.name == "bot.provider.client"
    ]
    assert errors and "IMAGE_API_KEY" in errors[0].getMessage()


async def test_forbidden_is_an_auth_error(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    image_api.script(forbidden_region())

    with pytest.raises(ProviderAuthError) as caught:
        await make_client().generate(FOX, SPEC)

    assert caught.value.status == 403 and len(image_api.generations) == 1


async def test_a_request_the_provider_calls_invalid_is_a_response_error(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    # The catalog offers a size this provider does not: its own 400, passed on, not retried.
    with pytest.raises(ProviderResponseError) as caught:
        await make_client().generate(replace(FOX, size="8192x8192"), SPEC)

    assert caught.value.status == 400
    assert "invalid_value" in caught.value.detail and "8192x8192" in caught.value.detail
    assert len(image_api.generations) == 1


# -- retries ----------------------------------------------------------------------------------


async def test_rate_limits_are_retried_after_the_delay_the_headers_ask_for(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    sleeps: SleepRecorder,
) -> None:
    image_api.script(
        rate_limited(retry_after_ms="250", retry_after="7"),  # the ms header wins
        rate_limited(retry_after="1.5"),
    )

    images = await make_client().generate(FOX, SPEC)

    assert len(images) == 1
    assert len(image_api.generations) == 3
    assert sleeps.delays == [0.25, 1.5]


async def test_retry_after_may_be_an_http_date(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    sleeps: SleepRecorder,
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=3)
    image_api.script(rate_limited(retry_after=email.utils.format_datetime(when, usegmt=True)))

    await make_client().generate(FOX, SPEC)

    assert len(sleeps.delays) == 1 and 1.0 < sleeps.delays[0] <= 3.0


async def test_server_errors_back_off_exponentially_then_succeed(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    sleeps: SleepRecorder,
) -> None:
    image_api.script(server_error(500), bad_gateway(), service_unavailable())

    images = await make_client(retry=RetryPolicy(provider_retries=3)).generate(FOX, SPEC)

    assert len(images) == 1 and len(image_api.generations) == 4
    assert sleeps.delays == [0.5, 1.0, 2.0]


async def test_jitter_shortens_the_backoff_by_at_most_a_quarter(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    sleeps: SleepRecorder,
) -> None:
    image_api.script(server_error(), server_error())

    await make_client(jitter=lambda: 1.0).generate(FOX, SPEC)

    assert sleeps.delays == [0.375, 0.75]


async def test_rate_limits_give_up_after_max_retries_with_the_last_retry_after(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    sleeps: SleepRecorder,
) -> None:
    image_api.script(*[rate_limited(retry_after="2")] * 3)

    with pytest.raises(ProviderRateLimitedError) as caught:
        await make_client(retry=RetryPolicy(provider_retries=2)).generate(FOX, SPEC)

    assert caught.value.retry_after == 2.0 and caught.value.status == 429
    assert len(image_api.generations) == 3 and sleeps.delays == [2.0, 2.0]


async def test_server_errors_give_up_after_max_retries_as_unavailable(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    sleeps: SleepRecorder,
) -> None:
    image_api.script(server_error(500), server_error(500), bad_gateway(), server_error(500))

    with pytest.raises(ProviderUnavailableError) as caught:
        await make_client(retry=RetryPolicy(provider_retries=2)).generate(FOX, SPEC)

    assert caught.value.status == 502 and "cf_bad_gateway" in caught.value.detail
    assert len(image_api.generations) == 3 and len(sleeps.delays) == 2
    assert image_api.pending == 1


async def test_a_retry_after_beyond_the_cap_is_not_waited_for(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    sleeps: SleepRecorder,
) -> None:
    image_api.script(rate_limited(retry_after="60"))

    with pytest.raises(ProviderRateLimitedError) as caught:
        await make_client(retry=RetryPolicy(provider_retries=2, max_wait=20.0)).generate(FOX, SPEC)

    assert caught.value.retry_after == 60.0
    assert len(image_api.generations) == 1 and sleeps.delays == []


async def test_no_retries_when_max_retries_is_zero(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    sleeps: SleepRecorder,
) -> None:
    image_api.script(server_error())

    with pytest.raises(ProviderUnavailableError):
        await make_client(retry=RetryPolicy(provider_retries=0)).generate(FOX, SPEC)

    assert len(image_api.generations) == 1 and sleeps.delays == []


async def gone_base_url() -> str:
    """The root of a fake API that has shut down: connections to it are refused."""
    async with FakeImageAPI() as gone:
        return gone.base_url


async def test_a_server_that_is_gone_is_retried_then_unavailable(
    http: httpx.AsyncClient, sleeps: SleepRecorder
) -> None:
    client = OpenAIImageClient(
        http=http,
        base_url=await gone_base_url(),
        api_key=SecretStr("sk-anything"),
        timeout=2.0,
        retry=RetryPolicy(provider_retries=2),
        max_download_bytes=1024,
        sleep=sleeps,
        jitter=lambda: 0.0,
    )

    with pytest.raises(ProviderUnavailableError) as caught:
        await client.generate(FOX, SPEC)

    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.status is None
    assert sleeps.delays == [0.5, 1.0]


# -- timeouts, malformed answers, caps ----------------------------------------------------------


async def test_a_slow_provider_times_out_once_without_retry(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    sleeps: SleepRecorder,
) -> None:
    image_api.script(Stall())
    started = time.monotonic()

    with pytest.raises(ProviderTimeoutError) as caught:
        await make_client(timeout=0.3).generate(FOX, SPEC)

    assert time.monotonic() - started < 3.0
    assert image_api.stalled.is_set()
    assert "0.3 s" in caught.value.detail
    assert len(image_api.generations) == 1 and sleeps.delays == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"created": 1700000000, "data": [{"b64_json": "iVBO', "not JSON"),
        (b"<html>504 Gateway Time-out</html>", "not JSON"),
        (b'{"created": 1700000000}', "no images"),
        (b'{"created": 1700000000, "data": []}', "no images"),
        (b'{"created": 1700000000, "data": [{"revised_prompt": "x"}]}', "neither"),
        (b'{"created": 1700000000, "data": [{"b64_json": "%%not base64%%"}]}', "base64"),
    ],
)
async def test_unusable_answers_are_response_errors(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    body: bytes,
    words: str,
) -> None:
    image_api.script(RawReply(body))

    with pytest.raises(ProviderResponseError) as caught:
        await make_client().generate(FOX, SPEC)

    assert words in caught.value.detail
    assert len(image_api.generations) == 1


async def test_bytes_that_are_not_an_image_are_a_response_error(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    image_api.script(NotAnImage())

    with pytest.raises(ProviderResponseError) as caught:
        await make_client().generate(FOX, SPEC)

    assert "not a readable image" in caught.value.detail
    assert caught.value.request_id and caught.value.request_id.startswith("req_")


async def test_a_dead_image_url_is_a_response_error(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    image_api.script(DeadUrl())

    with pytest.raises(ProviderResponseError) as caught:
        await make_client().generate(replace(FOX, n=2), SPEC)

    assert caught.value.status == 404 and "download" in caught.value.detail
    assert len(image_api.generations) == 1


@pytest.mark.parametrize("declare_length", [True, False])
async def test_a_download_over_the_byte_cap_is_refused(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI, declare_length: bool
) -> None:
    image_api.script(OversizedDownload(size=300_000, declare_length=declare_length))

    with pytest.raises(ProviderResponseError) as caught:
        await make_client(max_download_bytes=100_000).generate(FOX, SPEC)

    assert "too large" in caught.value.detail and "100000" in caught.value.detail
    assert len(image_api.generations) == 1


async def test_a_b64_image_over_the_byte_cap_is_refused(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    with pytest.raises(ProviderResponseError) as caught:
        await make_client(max_download_bytes=2_000).generate(replace(FOX, size="1792x1024"), SPEC)

    assert "too large" in caught.value.detail


@pytest.mark.parametrize("limit", ["timeout", "max_download_bytes", "max_concurrent_decodes"])
def test_limits_that_are_not_positive_are_config_errors(
    make_client: Callable[..., OpenAIImageClient], limit: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_client(**{limit: 0})

    assert limit in str(caught.value)


def test_a_base_url_that_is_not_http_is_a_config_error(http: httpx.AsyncClient) -> None:
    with pytest.raises(ConfigError):
        OpenAIImageClient(
            http=http,
            base_url="ftp://images.example/v1",
            api_key=SecretStr("sk-x"),
            timeout=1.0,
            retry=RetryPolicy(provider_retries=0),
            max_download_bytes=1,
        )


# -- how many answers are read, decoded and checked at once ----------------------------------------


class BodyCounter(Observed, httpx.AsyncBaseTransport):
    """httpx's own transport, counting the answers whose status and headers have arrived and
    the bodies being read now (from their first read until they are closed)."""

    name = "the client's transport"

    def __init__(self) -> None:
        super().__init__()
        self._inner = httpx.AsyncHTTPTransport()
        self.answers = 0
        self.reading = 0
        self.most_reading = 0
        self.downloading = 0  # bodies of image downloads (the fake's /files/) being read
        self.most_downloading = 0

    def summary(self) -> str:
        return f"{self.answers} answer(s), {self.reading} body(ies) being read"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        self.answers += 1
        await self._notify()
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CountedBody(response.stream, self, request.url.path.startswith("/files/")),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _reading(self, change: int, download: bool) -> None:
        self.reading += change
        self.most_reading = max(self.most_reading, self.reading)
        if download:
            self.downloading += change
            self.most_downloading = max(self.most_downloading, self.downloading)
        await self._notify()


class _CountedBody(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, counter: BodyCounter, download: bool) -> None:
        self._inner = inner
        self._counter = counter
        self._download = download
        self._open = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if not self._open:
            self._open = True
            await self._counter._reading(+1, self._download)
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            await self._counter._reading(-1, self._download)
        await self._inner.aclose()


@pytest.fixture
async def counted() -> AsyncIterator[tuple[httpx.AsyncClient, BodyCounter]]:
    transport = BodyCounter()
    async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
        yield client, transport


async def _answer_size(image_api: FakeImageAPI, request: GenerationRequest) -> int:
    """The bytes of the fake's answer to ``request`` (the same for the same prompt and seed)."""
    payload = {
        "model": SPEC.id,
        "prompt": request.prompt,
        "n": request.n,
        "size": request.size,
        "response_format": "b64_json",
        "seed": request.seed,
    }
    headers = {"Authorization": f"Bearer {image_api.api_key}"}
    async with httpx.AsyncClient() as plain:
        answer = await plain.post(
            f"{image_api.base_url}/images/generations", json=payload, headers=headers
        )
    image_api.requests.clear()
    return len(answer.content)


async def test_only_as_many_answers_as_the_byte_budget_holds_are_read_at_once(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    counted: tuple[httpx.AsyncClient, BodyCounter],
) -> None:
    # Six answers arrive together, each still being transferred; the budget holds two and a
    # half: two are read, the other four wait with their bodies unread (not refused). Memory
    # stays bounded however many answers come at once.
    http, transport = counted
    size = await _answer_size(image_api, FOX)
    client = make_client(http=http, answer_budget_bytes=size * 5 // 2)
    image_api.script(*[HeldBody()] * 6)
    jobs = [asyncio.create_task(client.generate(FOX, SPEC)) for _ in range(6)]

    await transport.wait_for(lambda: transport.answers == 6 and client.budget.waiting == 4)
    reading_while_held = transport.reading
    image_api.release_bodies.set()
    results = await asyncio.gather(*jobs)

    assert reading_while_held == 2
    assert transport.most_reading == 2
    assert [[decoded(image) for image in images] for images in results] == [[("PNG", (96, 48))]] * 6
    assert client.budget.used == 0


async def test_downloads_of_url_images_share_the_byte_budget(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    counted: tuple[httpx.AsyncClient, BodyCounter],
) -> None:
    # Three answers name two 1792x1024 images each, whose downloads arrive slowly; the budget
    # holds two such images and a half: one answer's images are read at a time, the other
    # downloads wait with their bodies unread, and all six arrive.
    http, transport = counted
    big = replace(FOX, size="1792x1024", n=2)
    one = await _answer_size(image_api, replace(big, n=1))  # about 4/3 of one image
    client = make_client(http=http, answer_budget_bytes=one * 2, max_download_bytes=one)
    image_api.script(*[Images(as_url=True, held_files=True)] * 3)
    jobs = [asyncio.create_task(client.generate(big, SPEC)) for _ in range(3)]

    await transport.wait_for(lambda: transport.answers == 9 and transport.downloading == 2)
    image_api.release_bodies.set()
    results = await asyncio.gather(*jobs)

    assert [[decoded(i) for i in images] for images in results] == [[("PNG", (1792, 1024))] * 2] * 3
    assert len(image_api.downloads) == 6
    assert transport.most_downloading == 2


async def test_answers_larger_than_the_whole_budget_are_read_one_at_a_time(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    counted: tuple[httpx.AsyncClient, BodyCounter],
) -> None:
    # Not refused: each waits until nothing else holds any budget.
    http, transport = counted
    size = await _answer_size(image_api, FOX)
    client = make_client(http=http, answer_budget_bytes=size - 1)
    image_api.script(HeldBody(), HeldBody())
    jobs = [asyncio.create_task(client.generate(FOX, SPEC)) for _ in range(2)]

    await transport.wait_for(lambda: transport.answers == 2 and transport.reading == 1)
    image_api.release_bodies.set()
    results = await asyncio.gather(*jobs)

    assert [decoded(images[0]) for images in results] == [("PNG", (96, 48))] * 2
    assert transport.most_reading == 1 and client.budget.used == 0


async def test_waiting_for_budget_does_not_count_against_the_timeout(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    counted: tuple[httpx.AsyncClient, BodyCounter],
) -> None:
    # Nine requests are sent; then a tenth, whose answer comes at once and takes the whole
    # budget, but whose body never finishes: it times out 0.5 s after it was sent, after the
    # nine's own deadlines. The nine answers arrive meanwhile, in time, and wait for budget
    # past their deadlines: they must still be delivered.
    http, transport = counted
    size = await _answer_size(image_api, FOX)
    client = make_client(http=http, timeout=0.5, answer_budget_bytes=size * 3 // 2)
    image_api.script(*[Stall()] * 9, HeldBody())
    early = [asyncio.create_task(client.generate(FOX, SPEC)) for _ in range(9)]
    await image_api.wait_for(lambda: len(image_api.generations) == 9)
    late = asyncio.create_task(client.generate(FOX, SPEC))
    await transport.wait_for(lambda: transport.reading == 1)

    image_api.release.set()  # the nine answers now, well within their 0.5 s
    results = await asyncio.gather(*early, return_exceptions=True)
    with pytest.raises(ProviderTimeoutError):
        await late

    assert [r if isinstance(r, BaseException) else decoded(r[0]) for r in results] == [
        ("PNG", (96, 48))
    ] * 9


async def test_slowly_streamed_answers_do_not_delay_a_healthy_one(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    counted: tuple[httpx.AsyncClient, BodyCounter],
) -> None:
    # Two answers trickle in (half their body, then nothing until released): as many as
    # there are decode turns. A third, healthy, answer must not wait for them.
    http, transport = counted
    client = make_client(http=http, timeout=5.0, max_concurrent_decodes=2)
    image_api.script(HeldBody(), HeldBody())
    slow = [asyncio.create_task(client.generate(FOX, SPEC)) for _ in range(2)]
    await transport.wait_for(lambda: transport.reading == 2)
    started = time.monotonic()
    healthy = asyncio.create_task(client.generate(replace(FOX, prompt="a healthy fox"), SPEC))

    done, _ = await asyncio.wait([healthy, *slow], return_when=asyncio.FIRST_COMPLETED)
    took = time.monotonic() - started
    image_api.release_bodies.set()
    await asyncio.gather(*slow)

    assert done == {healthy}
    assert took < 2.5  # half the slow answers' timeout: it did not wait for them
    assert decoded(healthy.result()[0]) == ("PNG", (96, 48))


async def test_the_loop_keeps_running_while_large_answers_are_parsed(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    # Four answers of four 2048x2048 noise PNGs (12.6 MB each, 67 MB of JSON per answer):
    # parsing and decoding them happens in worker threads, in small steps, so a ticker on
    # the event loop is never held up for long (parsing one such answer on the loop would
    # stop it for about half a second).
    noise = [_noise_png(2048, 2048, seed) for seed in range(4)]
    digests = [hashlib.sha256(p).hexdigest() for p in noise]
    body = json.dumps(
        {"created": 1, "data": [{"b64_json": base64.b64encode(p).decode()} for p in noise]}
    ).encode()
    del noise
    image_api.script(*[RawReply(body)] * 4)
    client = make_client(max_download_bytes=13 * 1024 * 1024)
    request = replace(FOX, size="2048x2048", n=4)
    delivered: list[list[str]] = []

    async with LoopLag() as lag:
        for job in asyncio.as_completed([client.generate(request, SPEC) for _ in range(4)]):
            delivered.append([hashlib.sha256(image.data).hexdigest() for image in await job])

    assert delivered == [digests] * 4
    # Generous, for a shared machine: parsing on the loop stalled it 0.69 s here.
    assert lag.worst < 0.3, f"the loop stalled {lag.worst:.3f} s"


def _noise_png(width: int, height: int, seed: int) -> bytes:
    """Incompressible pixels: a PNG as heavy as its size allows."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


# -- answers that are cut off ---------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_answer_cut_off_mid_body_is_tried_once(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    sleeps: SleepRecorder,
    chunked: bool,
) -> None:
    # The 200 and half the body arrived: the provider may have billed it, so no retry.
    image_api.script(*[CutBody(chunked=chunked)] * 3)

    with pytest.raises(ProviderResponseError) as caught:
        await make_client(retry=RetryPolicy(provider_retries=2)).generate(FOX, SPEC)

    assert "cut off" in caught.value.detail and "billed" in caught.value.detail
    assert caught.value.status == 200
    assert len(image_api.generations) == 1 and sleeps.delays == []


# -- images larger than asked -------------------------------------------------------------------


def _reset_peak_rss() -> None:
    """Make the process's peak RSS (VmHWM) start again from its RSS now (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


# Pillow only warns about images this size (it refuses 2x more); production keeps the warning.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
async def test_a_decompression_bomb_is_refused_without_decoding_it(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    # A 494 kB PNG claiming 13000x13000: 676 MB of pixels once decoded.
    image_api.script(Bomb(13_000, 13_000))
    client = make_client()
    _reset_peak_rss()
    rss_before = _status_kib("VmRSS")

    with pytest.raises(ProviderResponseError) as caught:
        await client.generate(FOX, SPEC)

    growth_mib = (_status_kib("VmHWM") - rss_before) / 1024
    assert "13000x13000" in caught.value.detail and "without decoding" in caught.value.detail
    assert growth_mib < 100, f"the process grew by {growth_mib:.0f} MiB"
    assert len(image_api.generations) == 1


@pytest.mark.parametrize(
    ("drawn", "kept"), [((192, 96), (96, 48)), ((150, 48), (96, 31)), ((96, 96), (48, 48))]
)
async def test_an_image_larger_than_asked_is_scaled_down_to_the_asked_size(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    drawn: tuple[int, int],
    kept: tuple[int, int],
) -> None:
    image_api.script(Images(size=drawn), Images(size=drawn, image_format="JPEG"))
    client = make_client()

    (png,) = await client.generate(FOX, SPEC)
    (jpeg,) = await client.generate(FOX, SPEC)

    assert decoded(png) == ("PNG", kept) and (png.width, png.height) == kept
    assert decoded(jpeg) == ("JPEG", kept) and jpeg.mime_type == "image/jpeg"


async def test_an_image_more_than_twice_the_asked_size_is_refused(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    image_api.script(Images(size=(193, 48)))

    with pytest.raises(ProviderResponseError) as caught:
        await make_client().generate(FOX, SPEC)

    assert "193x48, more than 192x96" in caught.value.detail


async def test_an_image_smaller_than_asked_is_delivered_as_it_is(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    image_api.script(Images(size=(64, 32)))

    (image,) = await make_client().generate(FOX, SPEC)

    assert decoded(image) == ("PNG", (64, 32))


# -- which URLs are fetched -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://10.0.0.7/a.png", "private address (10.0.0.7)"),
        ("http://169.254.169.254/latest/meta-data", "link-local address (169.254.169.254)"),
        ("http://[::1]:8080/a.png", "loopback address (::1)"),
        ("http://[::ffff:127.0.0.1]/a.png", "is a loopback address (::ffff:7f00:1)"),
        ("http://0.0.0.0/a.png", "unspecified address"),
        ("http://localhost:1/a.png", "loopback address"),
        ("file:///etc/passwd", "only http(s) URLs"),
        ("ftp://images.example/a.png", "only http(s) URLs"),
    ],
)
async def test_image_urls_on_private_addresses_are_refused(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI, url: str, words: str
) -> None:
    image_api.script(UrlItems((url,)))

    with pytest.raises(ProviderResponseError) as caught:
        await make_client(allow_private_urls=False).generate(FOX, SPEC)

    assert words in caught.value.detail
    assert len(image_api.generations) == 1


async def test_the_fake_s_own_urls_are_loopback_and_fetched_only_when_allowed(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    image_api.script(Images(as_url=True), Images(as_url=True))

    with pytest.raises(ProviderResponseError) as caught:
        await make_client(allow_private_urls=False).generate(FOX, SPEC)
    (image,) = await make_client(allow_private_urls=True).generate(FOX, SPEC)

    assert "loopback address (127.0.0.1)" in caught.value.detail
    assert "IMAGE_API_ALLOW_PRIVATE_URLS" in caught.value.detail
    assert decoded(image) == ("PNG", (96, 48))
    assert len(image_api.downloads) == 1  # the refused one was never requested


def _only_the_fake(address: IPAddress) -> str | None:
    """The real rule, except for 127.0.0.1 (where the fake serves): as if the fake were a
    public host."""
    return None if address == ipaddress.ip_address("127.0.0.1") else blocked_reason(address)


@pytest.mark.parametrize(
    "target",
    ["http://10.0.0.7/a.png", "http://169.254.169.254/latest/meta-data", "http://[::1]:1/"],
)
async def test_a_redirect_to_a_private_address_is_refused(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI, target: str
) -> None:
    image_api.script(Redirect(to=target))

    with pytest.raises(ProviderResponseError) as caught:
        await make_client(allow_private_urls=False, address_check=_only_the_fake).generate(
            FOX, SPEC
        )

    assert "address" in caught.value.detail and "public" in caught.value.detail
    assert len(image_api.downloads) == 1  # the redirect itself, not what it pointed at


async def test_redirects_are_followed_with_allow_private_urls(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    image_api.script(Redirect(hops=2))

    images = await make_client(allow_private_urls=True).generate(replace(FOX, n=2), SPEC)

    assert [decoded(image) for image in images] == [("PNG", (96, 48))] * 2
    assert len(image_api.downloads) == 6  # two redirects and the file, for each image


async def test_redirects_are_followed_each_hop_checked(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    image_api.script(Redirect(hops=3))

    (image,) = await make_client(allow_private_urls=False, address_check=_only_the_fake).generate(
        FOX, SPEC
    )

    assert decoded(image) == ("PNG", (96, 48)) and len(image_api.downloads) == 4


async def test_redirects_are_bounded(
    make_client: Callable[..., OpenAIImageClient], image_api: FakeImageAPI
) -> None:
    image_api.script(Redirect(hops=6))

    with pytest.raises(ProviderResponseError) as caught:
        await make_client().generate(FOX, SPEC)

    assert "more than 5 redirects" in caught.value.detail
    assert len(image_api.downloads) == 6


# -- the key never leaks ------------------------------------------------------------------------


def _texts_of(error: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        texts += [repr(v) for v in vars(current).values()] if hasattr(current, "__dict__") else []
        current = current.__cause__ or current.__context__
    return texts


async def test_the_api_key_never_appears_in_logs_or_errors(
    make_client: Callable[..., OpenAIImageClient],
    image_api: FakeImageAPI,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = image_api.api_key
    client = make_client(timeout=0.5, max_download_bytes=100_000)
    echo = ErrorReply(
        400,
        f"Invalid 'user': the value {key} looks like an API key.",
        "invalid_request_error",
        "invalid_value",
        param="user",
    )
    image_api.script(
        echo,
        invalid_api_key(key),
        content_policy_violation(),
        insufficient_quota(),
        *[rate_limited(retry_after_ms="1")] * 3,
        *[server_error()] * 3,
        RawReply(b"{oops"),
        NotAnImage(),
        DeadUrl(),
        OversizedDownload(size=200_000, declare_length=False),
        Stall(),
    )
    failures: list[ProviderError] = []
    while image_api.pending:
        with pytest.raises(ProviderError) as caught:
            await client.generate(replace(FOX, negative_prompt="blurry"), SPEC)
        failures.append(caught.value)
    wrong_key = "sk-wrong-" + key[::-1]
    for bad in (
        make_client(api_key=SecretStr(wrong_key)),
        make_client(base_url=await gone_base_url(), retry=RetryPolicy(provider_retries=0)),
    ):
        with pytest.raises(ProviderError) as caught:
            await bad.generate(FOX, SPEC)
        failures.append(caught.value)

    assert len(failures) == 13
    texts = [caplog.text] + [r.getMessage() + repr(r.args) for r in caplog.records]
    for failure in failures:
        texts += _texts_of(failure)
    texts.append(repr(client))
    for secret in (key, wrong_key):
        leaks = [text for text in texts if secret in text]
        assert leaks == [], f"key leaked in: {leaks[0][:300]}"
    assert "[redacted]" in failures[0].detail  # the provider's echo of the key
    assert caplog.records, "expected the client to log"


# -- odd answers, through httpx.MockTransport -----------------------------------------------------


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


async def _with_transport(
    handler: Callable[[httpx.Request], httpx.Response], request: GenerationRequest = FOX
) -> tuple[GeneratedImage, ...]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = OpenAIImageClient(
            http=http,
            base_url="https://images.example/v1",
            api_key=SecretStr("sk-mock"),
            timeout=5.0,
            retry=RetryPolicy(provider_retries=2),
            max_download_bytes=1024 * 1024,
            sleep=SleepRecorder(),
        )
        return await client.generate(request, SPEC)


async def test_a_dropped_connection_is_retried() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        payload = {"created": 1, "data": [{"b64_json": base64.b64encode(_png(96, 48)).decode()}]}
        return httpx.Response(200, json=payload)

    images = await _with_transport(handler)

    assert len(calls) == 2 and images[0].width == 96


async def test_x_should_retry_false_is_honoured() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = {"error": {"message": "down", "type": "server_error", "param": None, "code": None}}
        return httpx.Response(503, json=body, headers={"x-should-retry": "false"})

    with pytest.raises(ProviderUnavailableError):
        await _with_transport(handler)

    assert len(calls) == 1


async def test_an_error_object_sent_with_200_is_still_mapped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = content_policy_violation()
        body = {
            "error": {
                "message": error.message,
                "type": error.type,
                "param": None,
                "code": error.code,
            }
        }
        return httpx.Response(200, json=body)

    with pytest.raises(ContentRejectedError):
        await _with_transport(handler)


async def test_data_urls_and_unusual_formats_are_accepted() -> None:
    bmp = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(bmp, format="BMP")
    data_url = "data:image/bmp;base64," + base64.b64encode(bmp.getvalue()).decode()

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["response_format"] == "b64_json"
        return httpx.Response(200, json={"created": 1, "data": [{"url": data_url}]})

    (image,) = await _with_transport(handler, replace(FOX, size="64x64"))

    assert image.mime_type == "image/png" and decoded(image) == ("PNG", (64, 64))
    assert (image.width, image.height) == (64, 64)

"""Image providers: the protocol the service calls, and the OpenAI-compatible client.

``OpenAIImageClient`` speaks ``POST {base}/images/generations`` on the process's one
``httpx.AsyncClient`` (see ``new_http_client``). It asks for ``b64_json`` but accepts ``url``
items too, downloading them at once (they expire) with a byte cap, and it checks with Pillow
that every image decodes and is no larger than was asked.

Every failure is mapped in one place, ``_map_errors`` (``httpx``/``asyncio`` exceptions) and
``_status_error`` (HTTP answers), into ``bot.errors``::

    answer / exception                                      error                     retried
    400|429 insufficient_quota, billing_hard_limit_reached  ProviderQuotaError        no
    4xx content_policy_violation, moderation_blocked        ContentRejectedError      no
    401, 403                                                ProviderAuthError (ERROR) no
    429 (any other code)                                    ProviderRateLimitedError  yes
    5xx, 408, 409, connection errors, connect timeouts      ProviderUnavailableError  yes
    other 4xx (the provider calls our request invalid)      ProviderResponseError     no
    read/write/pool timeout, or no answer within ``timeout`` ProviderTimeoutError     no
    a 2xx answer cut off before its end                     ProviderResponseError     no
    malformed JSON, no images, bytes that are not an image,
    an image over 2x the asked size (or 4096 a side),
    a URL that is not http(s) or not public, a download
    that fails, 404s or is larger than the cap              ProviderResponseError     no

"Other 4xx" is a ``ProviderResponseError``: it means the provider and our catalog disagree
(a size or parameter the model does not take), which the user cannot fix and a retry does not
help, like an unusable answer. Timeouts and answers cut off mid-body are not retried because
the provider may have billed the attempt (and after a timeout the user has already waited
``timeout`` seconds); failed downloads are not retried because the generation they belong to
has been billed.

Retries follow the ``RetryPolicy`` (``bot.retry``, where the worst case is stated): at most
``provider_retries``; the delay is ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP
date), else the policy's exponential backoff with jitter; a provider asking for more than
``max_wait`` gets no retry (the error carries its ``retry_after``). ``x-should-retry: false``
is honoured.

Time and memory. A successful answer's body is read as it arrives, within the attempt's
``timeout``, its bytes held in a ``ByteBudget`` shared by every call on the client
(``answer_budget_bytes``): an answer that does not fit waits, with its body left in the
socket, until others release theirs; one larger than the whole budget is never refused, it
waits until it can be read alone. Then it waits for one of ``max_concurrent_decodes`` turns,
in which a worker thread parses the JSON and decodes the base64 in steps of a few
milliseconds (``bot.provider.answer``; the body is freed once decoded, so an answer costs at
most 1.75 times its size meanwhile), and each image is checked
(``bot.provider.imaging.conform``: its header first, so a decompression bomb is refused
before a pixel is decoded, then one full decode, and a downscale if it is larger than asked).
``url`` items are downloaded between two turns, their bytes in the same budget (their
declared lengths, or the byte cap for those without one). A slow body or download therefore
holds only its own bytes, never a turn. Waiting for budget or for a turn does not count
against ``timeout``: the provider answered in time, and only our own work is queued. Error
answers (at most 64 kB) are read at once, outside the budget. One client thus holds about
``answer_budget_bytes`` of answers (64 MiB by default) or one larger answer alone (134 MiB
for four images at the default 25 MiB cap), plus, for each turn, one image's pixels (16 MiB
at 2048x2048, 64 MiB at most). The budget is also how far bodies are read ahead of their
turn, so it is kept small: with 160 MiB, 20 photo-weight answers arriving together took the
client alone to 260 MiB instead of 180-200 MiB.

Image URLs are fetched over http(s) only, and only from public addresses: the host is
resolved off the loop and refused if any of its addresses is loopback, private, link-local,
multicast, reserved or unspecified (``bot.provider.address``), and the connection goes to a checked
address; redirects (at most 5) are followed here, each hop checked the same way.
``allow_private_urls`` (``IMAGE_API_ALLOW_PRIVATE_URLS``) lifts the address check, for a
provider on the local network.

The API key is sent only in the ``Authorization`` header of the generation request (never to
download URLs). Error details are built here from safe parts (status, the provider's error
code and message with the key redacted, the host), never from ``httpx`` exception text.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import mmap
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast

import httpx
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
from bot.provider.address import AddressCheck, blocked_reason, resolve
from bot.provider.answer import LongText, TooLargeError, decode_base64, parse
from bot.provider.budget import ByteBudget, Lease
from bot.provider.imaging import ImageTooLargeError, conform
from bot.provider.wire import ImagesRequest
from bot.retry import RetryPolicy

__all__ = ["ImageProvider", "OpenAIImageClient", "new_http_client"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Body = bytearray | mmap.mmap  # a body being read, or read

_CONNECT_TIMEOUT = 10.0
_ERROR_BODY_LIMIT = 64 * 1024
_DETAIL_LIMIT = 300
_DEFAULT_BUDGET = 64 * 1024 * 1024
_MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
_CONTENT_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
_RETRY_STATUSES = frozenset({408, 409, 429})
# Compressed bodies would be inflated in one call per network read, past our byte caps, and
# base64 of PNGs hardly compresses anyway: ask for the bytes as they are, with their length.
_IDENTITY = {"Accept-Encoding": "identity"}


class ImageProvider(Protocol):
    """Draws ``request.n`` images. ``billable`` is False for the offline preview ($0 jobs)."""

    @property
    def billable(self) -> bool: ...

    async def generate(
        self, request: GenerationRequest, spec: ModelSpec
    ) -> tuple[GeneratedImage, ...]: ...


def new_http_client(*, timeout: float) -> httpx.AsyncClient:
    """The process's one HTTP client: pooled connections, ``timeout`` seconds per read/write,
    10 s to connect. No default headers, so nothing secret rides along on downloads."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(_CONNECT_TIMEOUT, timeout)),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=30),
        headers={"User-Agent": "imagine-bot"},
    )


class _Transient(Exception):
    """A failure worth another attempt; ``error`` is what the caller gets when none is left."""

    def __init__(self, error: ProviderError, retry_after: float | None = None) -> None:
        super().__init__(error.detail)
        self.error = error
        self.retry_after = retry_after


class _CutOffError(Exception):
    """The connection ended before the body did (``received`` bytes, ``declared`` expected)."""

    def __init__(self, received: int, declared: int | None) -> None:
        expected = f" of {declared}" if declared is not None else ""
        super().__init__(f"after {received}{expected} bytes")
        self.received = received
        self.declared = declared


@dataclass(slots=True)
class _Item:
    """One image of an answer: its decoded bytes, or the URL to download them from."""

    blob: bytes | None
    url: str | None
    revised_prompt: str | None


class OpenAIImageClient:
    """An OpenAI-compatible ``/images/generations`` client (OpenAI, DeepInfra, Compile Labs...).

    ``base_url`` is the API root as the OpenAI SDK takes it, ``/v1`` included; a bare origin
    (``https://host``) gets ``/v1``. ``timeout`` bounds one attempt (request, body and
    downloads), not counting the time its answer waits for budget or a turn.
    ``answer_budget_bytes`` is how many bytes of answers (bodies, then decoded images and
    downloads) are held at once across every call on this client, 64 MiB by default; an
    answer larger than that is read alone.
    ``max_concurrent_decodes`` is how many answers are parsed, decoded and checked with Pillow
    at once: each decodes one image's pixels at a time (16 MiB at 2048x2048), and 2 keep both
    cores busy. ``allow_private_urls`` lets image URLs name loopback and private addresses.
    ``address_check``, ``sleep`` and ``jitter`` exist for tests.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: SecretStr,
        timeout: float,
        retry: RetryPolicy,
        max_download_bytes: int,
        max_concurrent_decodes: int = 2,
        answer_budget_bytes: int | None = None,
        allow_private_urls: bool = False,
        address_check: AddressCheck = blocked_reason,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not api_key.get_secret_value():
            raise ConfigError("IMAGE_API_KEY is empty")
        if (
            timeout <= 0
            or max_download_bytes <= 0
            or max_concurrent_decodes < 1
            or (answer_budget_bytes is not None and answer_budget_bytes <= 0)
        ):
            raise ConfigError(
                "image API limits must be positive (timeout, max_download_bytes, "
                "max_concurrent_decodes, answer_budget_bytes)"
            )
        self._http = http
        self._endpoint = _endpoint(base_url)
        self._where = f"{self._endpoint.host}{self._endpoint.path}"
        self._api_key = api_key
        self._timeout = timeout
        self._http_timeout = httpx.Timeout(timeout, connect=min(_CONNECT_TIMEOUT, timeout))
        self._retry = retry
        self._max_download_bytes = max_download_bytes
        self._decode_turns = asyncio.Semaphore(max_concurrent_decodes)
        self._budget = ByteBudget(answer_budget_bytes or _DEFAULT_BUDGET)
        self._address_check: AddressCheck | None = None if allow_private_urls else address_check
        self._sleep = sleep
        self._jitter = jitter

    @property
    def billable(self) -> bool:
        return True

    @property
    def endpoint(self) -> str:
        """The generation URL without any query string (safe to show or log)."""
        return str(self._endpoint.copy_with(query=None))

    @property
    def budget(self) -> ByteBudget:
        """The bytes of answers this client holds (``used``) and may hold (``total``)."""
        return self._budget

    async def generate(
        self, request: GenerationRequest, spec: ModelSpec
    ) -> tuple[GeneratedImage, ...]:
        payload = _payload(request, spec)
        log.debug(
            "image request to %s: model=%s size=%s n=%d prompt=%r",
            self._where,
            spec.id,
            request.size,
            request.n,
            request.prompt,
        )
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                images = await self._attempt(payload, request)
            except _Transient as transient:
                delay = self._backoff(transient, attempt)
                if delay is None:
                    raise transient.error from transient.__cause__
                attempt += 1
                log.warning(
                    "image API %s: %s; retry %d of %d in %.2f s",
                    self._where,
                    transient.error.detail,
                    attempt,
                    self._retry.provider_retries,
                    delay,
                )
                await self._sleep(delay)
                continue
            log.info(
                "image API %s: %d image(s) of %s in %.2f s after %d attempt(s)",
                self._where,
                len(images),
                spec.id,
                time.monotonic() - started,
                attempt + 1,
            )
            return images

    def _backoff(self, transient: _Transient, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up now."""
        if attempt >= self._retry.provider_retries:
            return None
        if transient.retry_after is not None:
            if transient.retry_after > self._retry.max_wait:
                return None
            return transient.retry_after
        return self._retry.backoff(attempt) * (1 - 0.25 * self._jitter())

    async def _attempt(
        self, payload: ImagesRequest, request: GenerationRequest
    ) -> tuple[GeneratedImage, ...]:
        deadline = asyncio.get_running_loop().time() + self._timeout
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}", **_IDENTITY}
        lease = self._budget.lease()
        try:
            async with (
                self._map_errors("request", retry=True),
                asyncio.timeout_at(deadline) as clock,
                self._http.stream(
                    "POST",
                    self._endpoint,
                    json=payload,
                    headers=headers,
                    timeout=self._http_timeout,
                ) as response,
            ):
                status, response_headers = response.status_code, response.headers
                body: Body = bytearray()
                if response.is_success:
                    body = await self._read_answer(response, request.n, lease, clock)
                    error_body = b""
                else:
                    error_body, _ = await _read_capped(response, _ERROR_BODY_LIMIT)
                deadline = clock.when() or deadline  # moved by the time spent waiting for budget
            if not 200 <= status < 300:
                raise self._status_error(status, response_headers, _error_fields(error_body))
            return await self._images(body, status, response_headers, request, lease, deadline)
        finally:
            lease.release()

    async def _read_answer(
        self, response: httpx.Response, n: int, lease: Lease, clock: asyncio.Timeout
    ) -> Body:
        """The whole body of a successful answer, its bytes held in ``lease``. A body cut off
        is final: the provider may have billed the attempt."""
        status, request_id = response.status_code, response.headers.get("x-request-id")
        limit = self._response_limit(n)
        try:
            body, complete = await self._read_leased(response, limit, lease, clock)
        except _CutOffError as exc:
            raise ProviderResponseError(
                f"the answer from {self._where} was cut off {exc}; not retried, as the "
                "provider may have billed it",
                status=status,
                request_id=request_id,
            ) from exc
        if not complete:
            _free(body)
            raise ProviderResponseError(
                f"the answer is larger than {limit} bytes", status=status, request_id=request_id
            )
        return body

    async def _read_leased(
        self,
        response: httpx.Response,
        limit: int,
        lease: Lease,
        clock: asyncio.Timeout,
        *,
        reserved: int = 0,
    ) -> tuple[Body, bool]:
        """Up to ``limit`` bytes of the body, and whether that was all of it, each byte in
        ``lease`` before it is kept: its declared length at once, else as it arrives, beyond
        the ``reserved`` bytes the lease already holds for it (which are trimmed to the
        length). Raises ``_CutOffError`` if the connection ends early. The caller frees the
        body with ``_free``."""
        declared = _declared_length(response)
        if declared is not None and declared > limit:
            return bytearray(), False
        if declared is not None:
            if declared > reserved:
                await self._grow(lease, declared - reserved, clock)
            lease.shrink_to(lease.held - max(0, reserved - declared))
            reserved = declared
        # A body of known length goes into an anonymous mapping: its pages return to the
        # system the moment it is freed, where a bytearray's would stay in malloc's heap
        # (60 MiB more at the peak of 20 photo-weight answers arriving together).
        buffer: Body = mmap.mmap(-1, declared) if declared else bytearray()
        size = 0
        # aiter_bytes() is an async generator: close it now rather than when it is collected.
        chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    if size + len(chunk) > (limit if declared is None else declared):
                        return buffer, False
                    if size + len(chunk) > reserved:
                        await self._grow(lease, size + len(chunk) - reserved, clock)
                        reserved = size + len(chunk)
                    if isinstance(buffer, bytearray):
                        buffer += chunk
                    else:
                        buffer[size : size + len(chunk)] = chunk
                    size += len(chunk)
        except httpx.TimeoutException:
            raise
        except httpx.TransportError as exc:
            raise _CutOffError(size, declared) from exc
        lease.shrink_to(lease.held - (reserved - size))
        return buffer, True

    async def _grow(self, lease: Lease, amount: int, clock: asyncio.Timeout) -> None:
        """Take ``amount`` bytes into ``lease``, with the attempt's ``clock`` stopped while
        waiting for them."""
        if lease.try_grow(amount):
            return
        loop = asyncio.get_running_loop()
        started, due = loop.time(), clock.when()
        clock.reschedule(None)
        try:
            await lease.grow(amount)
        finally:
            waited = loop.time() - started
            if due is not None:
                clock.reschedule(due + waited)
        if waited > 0.5:
            log.debug("image API %s: an answer waited %.2f s for memory", self._where, waited)

    @contextlib.asynccontextmanager
    async def _decode_turn(self) -> AsyncIterator[float]:
        """One of ``max_concurrent_decodes`` turns to parse and check an answer; yields the
        seconds waited for it, by which the attempt's deadline moves."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with self._decode_turns:
            waited = loop.time() - started
            if waited > 0.5:
                log.debug("image API %s: an answer waited %.2f s for its turn", self._where, waited)
            yield waited

    async def _images(
        self,
        body: Body,
        status: int,
        headers: httpx.Headers,
        request: GenerationRequest,
        lease: Lease,
        deadline: float,
    ) -> tuple[GeneratedImage, ...]:
        request_id = headers.get("x-request-id")
        asked = _dimensions(request.size)
        async with self._decode_turn() as waited:
            items = await asyncio.to_thread(self._decode_answer, body, status, headers, request.n)
            del body  # freed by _decode_answer: only the decoded images are needed now
            lease.shrink_to(sum(len(item.blob or b"") for item in items))
            if all(item.blob is not None for item in items):
                return await self._checked(items, asked, request, request_id)
        blobs = await self._fetch_all(items, deadline + waited, request_id, lease)
        for item, blob in zip(items, blobs, strict=True):
            item.blob = blob
        async with self._decode_turn():
            return await self._checked(items, asked, request, request_id)

    async def _checked(
        self,
        items: list[_Item],
        asked: tuple[int, int] | None,
        request: GenerationRequest,
        request_id: str | None,
    ) -> tuple[GeneratedImage, ...]:
        images: list[GeneratedImage] = []
        for index, item in enumerate(items):
            blob, item.blob = item.blob or b"", None
            data, mime_type, width, height = await asyncio.to_thread(
                _conform, blob, index, asked, request_id
            )
            del blob  # the original, if it was re-encoded
            if f"{width}x{height}" != request.size:
                log.debug("image %d is %dx%d, asked for %s", index, width, height, request.size)
            images.append(
                GeneratedImage(
                    data=data,
                    mime_type=mime_type,
                    width=width,
                    height=height,
                    seed=request.seed,
                    revised_prompt=item.revised_prompt,
                )
            )
        return tuple(images)

    def _response_limit(self, n: int) -> int:
        """The most JSON we read: ``n`` capped images as base64, plus room for the rest."""
        return math.ceil(self._max_download_bytes * 4 / 3) * n + 1024 * 1024

    def _decode_answer(
        self, body: Body, status: int, headers: httpx.Headers, n: int
    ) -> list[_Item]:
        """The answer's images, base64 decoded; ``url`` items are left to download. Runs in
        a worker thread, and frees ``body`` before it returns."""
        request_id = headers.get("x-request-id")
        try:
            try:
                document = parse(body)
            except ValueError as exc:
                raise ProviderResponseError(
                    "the answer is not JSON", status=status, request_id=request_id
                ) from exc
            if isinstance(document, dict) and "error" in document and not document.get("data"):
                # Some compatible providers report failures with a 200 status.
                raise self._status_error(status, headers, _error_fields_of(document))
            data = document.get("data") if isinstance(document, dict) else None
            if not isinstance(data, list) or not data:
                raise ProviderResponseError(
                    "the answer has no images ('data' is missing or empty)",
                    status=status,
                    request_id=request_id,
                )
            if len(data) > n:
                log.warning("image API sent %d images for n=%d; keeping %d", len(data), n, n)
            elif len(data) < n:
                log.warning("image API sent %d of %d images", len(data), n)
            return [
                self._item(index, item, status, request_id) for index, item in enumerate(data[:n])
            ]
        finally:
            _free(body)

    def _item(self, index: int, item: object, status: int, request_id: str | None) -> _Item:
        encoded = item.get("b64_json") if isinstance(item, dict) else None
        url = item.get("url") if isinstance(item, dict) else None
        if not (_nonempty(encoded) or _nonempty(url)):
            raise ProviderResponseError(
                f"image {index} has neither 'b64_json' nor 'url'",
                status=status,
                request_id=request_id,
            )
        assert isinstance(item, dict)  # checked just above
        revised = item.get("revised_prompt")
        revised = revised if isinstance(revised, str) and revised else None
        if not _nonempty(encoded) and url is not None and url.startswith("data:"):
            encoded = url.after(",") if isinstance(url, LongText) else url.partition(",")[2]
        if isinstance(encoded, str | LongText) and _nonempty(encoded):
            return _Item(self._decode_base64(encoded, index, request_id), None, revised)
        if isinstance(url, LongText):
            raise ProviderResponseError(
                f"image {index}'s URL is {len(url)} characters long", request_id=request_id
            )
        assert isinstance(url, str)  # _nonempty(url) and not a LongText
        return _Item(None, url, revised)

    def _decode_base64(self, encoded: str | LongText, index: int, request_id: str | None) -> bytes:
        try:
            return decode_base64(encoded, limit=self._max_download_bytes)
        except TooLargeError as exc:
            raise self._too_large(index, exc.size, request_id) from exc
        except ValueError as exc:
            raise ProviderResponseError(
                f"image {index} is not valid base64", request_id=request_id
            ) from exc

    async def _fetch_all(
        self, items: list[_Item], deadline: float, request_id: str | None, lease: Lease
    ) -> list[bytes]:
        """The bytes of every item, downloading the ``url`` ones concurrently: first every
        download's headers, then their declared lengths (the cap for those without one) are
        taken from ``lease`` at once, then the bodies are read."""
        wanted = [(index, item.url) for index, item in enumerate(items) if item.url is not None]
        blobs = [item.blob or b"" for item in items]
        async with (
            self._map_errors("download of the images", retry=False),
            asyncio.timeout_at(deadline) as clock,
            contextlib.AsyncExitStack() as stack,
        ):

            async def open_one(index: int, url: str) -> tuple[httpx.Response, str]:
                stage = f"download of image {index}"
                async with self._map_errors(stage, retry=False):
                    response, host = await self._open_download(stage, url, request_id)
                stack.push_async_callback(response.aclose)
                if response.status_code != 200:
                    raise ProviderResponseError(
                        f"{stage} from {host} failed: HTTP {response.status_code}",
                        status=response.status_code,
                        request_id=request_id,
                    )
                declared = _declared_length(response)
                if declared is not None and declared > self._max_download_bytes:
                    raise self._too_large(index, declared, request_id)
                return response, host

            opened = await _first_error(open_one(index, url) for index, url in wanted)
            sizes = [_declared_length(r) or self._max_download_bytes for r, _ in opened]
            await self._grow(lease, sum(sizes), clock)

            async def read_one(index: int, response: httpx.Response, host: str, size: int) -> None:
                stage = f"download of image {index}"
                async with self._map_errors(stage, retry=False):
                    try:
                        blob, complete = await self._read_leased(
                            response, self._max_download_bytes, lease, clock, reserved=size
                        )
                    except _CutOffError as exc:
                        raise ProviderResponseError(
                            f"{stage} from {host} was cut off {exc}", request_id=request_id
                        ) from exc
                if complete:
                    blobs[index] = bytes(blob)
                _free(blob)
                if not complete:
                    raise self._too_large(index, None, request_id)

            await _first_error(
                read_one(index, response, host, size)
                for (index, _), (response, host), size in zip(wanted, opened, sizes, strict=True)
            )
        return blobs

    async def _open_download(
        self, stage: str, url: str, request_id: str | None
    ) -> tuple[httpx.Response, str]:
        """The answer to ``GET url`` (its body not read yet) and the host that gave it, after
        following redirects, each hop's URL checked."""
        target = httpx.URL(url)
        for _hop in range(_MAX_REDIRECTS + 1):
            if target.scheme not in ("http", "https") or not target.host:
                raise ProviderResponseError(
                    f"{stage}: only http(s) URLs are fetched, not {target.scheme or 'this'}",
                    request_id=request_id,
                )
            response = await self._get(stage, target, request_id)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECT_STATUSES or location is None:
                return response, target.host
            await response.aclose()
            target = target.join(location)
        raise ProviderResponseError(
            f"{stage}: more than {_MAX_REDIRECTS} redirects", request_id=request_id
        )

    async def _get(self, stage: str, url: httpx.URL, request_id: str | None) -> httpx.Response:
        """``GET url``, streamed, from one of its host's addresses once all are checked."""
        if self._address_check is None:
            request = self._http.build_request(
                "GET", url, headers=_IDENTITY, timeout=self._http_timeout
            )
            return await self._http.send(request, stream=True)
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await resolve(host, port)
        except OSError as exc:
            raise ProviderResponseError(
                f"{stage}: {url.host} does not resolve", request_id=request_id
            ) from exc
        for address in addresses:
            reason = self._address_check(address)
            if reason is not None:
                raise ProviderResponseError(
                    f"{stage}: {url.host} is a {reason} address ({address}); image URLs must "
                    "be public unless IMAGE_API_ALLOW_PRIVATE_URLS is set",
                    request_id=request_id,
                )
        headers = {**_IDENTITY, "Host": url.netloc.decode("ascii")}
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        failure: httpx.ConnectError | None = None
        for address in addresses:  # pinned: a second lookup cannot answer differently
            request = self._http.build_request(
                "GET",
                url.copy_with(host=str(address)),
                headers=headers,
                extensions=extensions,
                timeout=self._http_timeout,
            )
            try:
                return await self._http.send(request, stream=True)
            except httpx.ConnectError as exc:
                failure = exc
        if failure is None:
            raise ProviderResponseError(f"{stage}: {url.host} has no address")
        raise failure

    def _too_large(self, index: int, size: int | None, request_id: str | None) -> ProviderError:
        got = f"{size} bytes" if size is not None else "more"
        return ProviderResponseError(
            f"image {index} is too large ({got}; the limit is {self._max_download_bytes} bytes)",
            request_id=request_id,
        )

    # -- error mapping: the one place where failures become bot.errors ------------------------

    @contextlib.asynccontextmanager
    async def _map_errors(self, stage: str, *, retry: bool) -> AsyncIterator[None]:
        """Translate ``httpx`` and deadline exceptions raised inside the block. Transient ones
        become ``_Transient`` when ``retry`` is true (the generation request), else final."""
        try:
            yield
        except httpx.ConnectTimeout as exc:
            error = ProviderUnavailableError(f"{stage}: could not connect to {self._where} in time")
            if retry:
                raise _Transient(error) from exc
            raise error from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise ProviderTimeoutError(
                f"{stage}: no answer from {self._where} within {self._timeout:g} s"
            ) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ProviderResponseError(f"{stage}: the URL is not a usable http(s) URL") from exc
        except httpx.TransportError as exc:
            error = ProviderUnavailableError(
                f"{stage}: {type(exc).__name__} talking to {self._where}"
            )
            if retry:
                raise _Transient(error) from exc
            raise error from exc
        except httpx.HTTPError as exc:  # DecodingError, TooManyRedirects, StreamError
            raise ProviderResponseError(f"{stage}: {type(exc).__name__}") from exc

    def _status_error(
        self, status: int, headers: httpx.Headers, fields: tuple[str | None, str | None, str]
    ) -> ProviderError | _Transient:
        """What an unsuccessful HTTP answer means (``fields``: its ``_error_fields``)."""
        request_id = headers.get("x-request-id")
        kind, code, message = fields
        message = self._redact(message)
        label = code if code and not code.isdigit() else kind
        detail = f"HTTP {status}" + (f" {label}" if label else "")
        if message:
            detail += f": {message}"
        if code in _QUOTA_CODES or kind in _QUOTA_CODES:
            log.error("image API %s: out of credit: %s", self._where, detail)
            return ProviderQuotaError(detail, status=status, request_id=request_id)
        if code in _CONTENT_CODES:
            log.info("image API %s refused the prompt: %s", self._where, detail)
            return ContentRejectedError(detail, status=status, request_id=request_id)
        if status in (401, 403):
            log.error(
                "image API %s rejected IMAGE_API_KEY (request %s): %s",
                self._where,
                request_id,
                detail,
            )
            return ProviderAuthError(detail, status=status, request_id=request_id)
        retryable = status in _RETRY_STATUSES or status >= 500
        if not retryable:
            log.warning("image API %s refused the request: %s", self._where, detail)
            return ProviderResponseError(detail, status=status, request_id=request_id)
        retry_after = _retry_after(headers)
        error: ProviderError
        if status == 429:
            error = ProviderRateLimitedError(
                detail, status=status, request_id=request_id, retry_after=retry_after
            )
        else:
            error = ProviderUnavailableError(detail, status=status, request_id=request_id)
        if headers.get("x-should-retry", "").lower() == "false":
            return error
        return _Transient(error, retry_after)

    def _redact(self, text: str) -> str:
        secret = self._api_key.get_secret_value()
        return text.replace(secret, "[redacted]") if secret else text


async def _first_error(calls: Iterable[Awaitable[_T]]) -> list[_T]:
    """The results of ``calls`` run concurrently; if any fails, the others are cancelled and
    the first ``ProviderError`` is raised (not an exception group)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_awaited(call)) for call in calls]
    except BaseExceptionGroup as failures:
        first = next((e for e in failures.exceptions if isinstance(e, ProviderError)), None)
        if first is None:
            raise
        raise first from first.__cause__
    return [task.result() for task in tasks]


async def _awaited(call: Awaitable[_T]) -> _T:
    return await call


def _endpoint(base_url: str) -> httpx.URL:
    try:
        url = httpx.URL(base_url.strip())
    except httpx.InvalidURL as exc:
        raise ConfigError("IMAGE_API_BASE_URL is not a valid URL") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            "IMAGE_API_BASE_URL must be an http(s) URL such as https://api.openai.com/v1"
        )
    path = url.path.rstrip("/") or "/v1"
    return url.copy_with(path=f"{path}/images/generations")


def _payload(request: GenerationRequest, spec: ModelSpec) -> ImagesRequest:
    payload: ImagesRequest = {
        "model": spec.id,
        "prompt": request.prompt,
        "n": request.n,
        "size": request.size,
        "response_format": "b64_json",
    }
    if spec.supports_seed and request.seed is not None:
        payload["seed"] = request.seed
    if spec.supports_negative_prompt and request.negative_prompt:
        payload["negative_prompt"] = request.negative_prompt
    return payload


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether that was all of it."""
    buffer = bytearray()
    # aiter_bytes() is an async generator: close it now rather than when it is collected.
    body = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
    async with contextlib.aclosing(body) as chunks:
        async for chunk in chunks:
            buffer += chunk
            if len(buffer) > limit:
                return bytes(buffer[:limit]), False
    return bytes(buffer), True


def _free(body: Body) -> None:
    """Give a body's memory back now, whoever still refers to it."""
    if isinstance(body, bytearray):
        body.clear()
    else:
        body.close()


def _declared_length(response: httpx.Response) -> int | None:
    """The body's length from ``Content-Length``, when it is the length of what we read."""
    declared = response.headers.get("content-length", "")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    return int(declared) if declared.isdigit() and encoding in ("", "identity") else None


def _dimensions(size: str) -> tuple[int, int] | None:
    """``(1024, 768)`` for ``"1024x768"``; ``None`` for anything else (``"auto"``)."""
    width, _, height = size.partition("x")
    if width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0:
        return int(width), int(height)
    return None


def _nonempty(value: object) -> bool:
    return isinstance(value, str | LongText) and len(value) > 0


def _error_fields(body: bytes) -> tuple[str | None, str | None, str]:
    """``(type, code, message)`` from an error body in OpenAI's shape or a common variant;
    the message is one line, shortened."""
    try:
        document: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, None, "(no JSON error body)" if body.strip() else ""
    return _error_fields_of(document)


def _error_fields_of(document: Any) -> tuple[str | None, str | None, str]:
    error = document.get("error", document) if isinstance(document, dict) else None
    if isinstance(error, str):
        return None, None, _one_line(error)
    if not isinstance(error, dict):
        return None, None, ""
    kind, code = error.get("type"), error.get("code")
    message = error.get("message") or error.get("detail") or ""
    if isinstance(message, LongText):
        message = f"({len(message)} characters)"
    return (
        _field(kind),
        _field(code),
        _one_line(message if isinstance(message, str) else json.dumps(message, default=_field)),
    )


def _field(value: object) -> str | None:
    return None if value is None or isinstance(value, LongText) else str(value)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def _retry_after(headers: httpx.Headers) -> float | None:
    """The provider's requested wait: ``retry-after-ms``, else ``retry-after`` (seconds or an
    HTTP date). Negative or unreadable values count as absent."""
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _conform(
    blob: bytes, index: int, asked: tuple[int, int] | None, request_id: str | None
) -> tuple[bytes, str, int, int]:
    """``bot.provider.imaging.conform`` with its failures as provider errors. Runs in a worker
    thread."""
    try:
        return conform(blob, asked)
    except ImageTooLargeError as exc:
        raise ProviderResponseError(
            f"image {index} is {exc}; refused without decoding it", request_id=request_id
        ) from exc
    except Exception as exc:  # Pillow raises many types for bad data; all mean "not an image"
        raise ProviderResponseError(
            f"image {index} is not a readable image ({type(exc).__name__})",
            request_id=request_id,
        ) from exc

"""Image providers: the protocol the service calls, and the OpenAI-compatible client.

``OpenAIImageClient`` speaks ``POST {base}/images/generations`` on the process's one
``httpx.AsyncClient`` (see ``new_http_client``). It asks for ``b64_json`` but accepts ``url``
items too, downloading them at once (they expire) with a byte cap, and it checks with Pillow
that every image decodes.

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
    malformed JSON, no images, bytes that are not an image,
    a download that fails, 404s or is larger than the cap   ProviderResponseError     no

"Other 4xx" is a ``ProviderResponseError``: it means the provider and our catalog disagree
(a size or parameter the model does not take), which the user cannot fix and a retry does not
help, like an unusable answer. Timeouts are not retried because the user has already waited
``timeout`` seconds and the provider may have billed the attempt; failed downloads are not
retried because the generation they belong to has been billed.

Retries are bounded by ``max_retries``. The delay is ``retry-after-ms``, else ``retry-after``
(seconds or an HTTP date), else ``0.5 * 2**attempt`` capped at 8 s with jitter; a provider
asking for more than ``retry_cap_seconds`` gets no retry (the error carries its
``retry_after``). ``x-should-retry: false`` is honoured.

Memory: while an answer is read and checked it costs about three times its size (the raw
JSON, the base64 text, the decoded image, and Pillow's pixels during the check): 30 MB for one
photo-weight 2048x2048 image. So at most ``max_concurrent_decodes`` successful answers per client
are read, decoded, downloaded and checked at a time; the others wait, after their status and
headers have arrived, with their bodies left in the socket until their turn. The raw JSON and
the base64 text are dropped as soon as they have been decoded. Time spent waiting for a turn
does not count against ``timeout``: the provider answered in time, and only our own work is
queued. Error answers (at most 64 kB) are read at once.

The API key is sent only in the ``Authorization`` header of the generation request (never to
download URLs). Error details are built here from safe parts (status, the provider's error
code and message with the key redacted, the host), never from ``httpx`` exception text.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import email.utils
import io
import json
import logging
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import httpx
from PIL import Image
from pydantic import SecretStr

from bot._wire import ImageItem, ImagesRequest
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

__all__ = ["ImageProvider", "OpenAIImageClient", "new_http_client"]

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 10.0
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0
_ERROR_BODY_LIMIT = 64 * 1024
_DETAIL_LIMIT = 300
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
_CONTENT_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
_RETRY_STATUSES = frozenset({408, 409, 429})
_MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


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


class OpenAIImageClient:
    """An OpenAI-compatible ``/images/generations`` client (OpenAI, DeepInfra, Compile Labs...).

    ``base_url`` is the API root as the OpenAI SDK takes it, ``/v1`` included; a bare origin
    (``https://host``) gets ``/v1``. ``timeout`` bounds one attempt (request and downloads),
    not counting the time its answer waits for a turn to be read and checked.
    ``max_concurrent_decodes`` is how many successful answers are read, decoded (base64 or
    downloads) and checked with Pillow at once, across every call on this client: each costs
    about three times its size meanwhile (30 MB for a photo-weight 2048x2048 image), and 2 keep
    20 such answers arriving together within the bot's memory budget at little cost in time
    (a check takes 25-100 ms). ``sleep`` and ``jitter`` exist for tests.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: SecretStr,
        timeout: float,
        max_retries: int,
        max_download_bytes: int,
        retry_cap_seconds: float = 20.0,
        max_concurrent_decodes: int = 2,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not api_key.get_secret_value():
            raise ConfigError("IMAGE_API_KEY is empty")
        if (
            timeout <= 0
            or max_retries < 0
            or max_download_bytes <= 0
            or retry_cap_seconds < 0
            or max_concurrent_decodes < 1
        ):
            raise ConfigError(
                "image API limits must be positive (timeout, max_download_bytes, "
                "max_concurrent_decodes) and not negative (max_retries, retry_cap_seconds)"
            )
        self._http = http
        self._endpoint = _endpoint(base_url)
        self._where = f"{self._endpoint.host}{self._endpoint.path}"
        self._api_key = api_key
        self._timeout = timeout
        self._http_timeout = httpx.Timeout(timeout, connect=min(_CONNECT_TIMEOUT, timeout))
        self._max_retries = max_retries
        self._max_download_bytes = max_download_bytes
        self._retry_cap = retry_cap_seconds
        self._decode_turns = asyncio.Semaphore(max_concurrent_decodes)
        self._sleep = sleep
        self._jitter = jitter

    @property
    def billable(self) -> bool:
        return True

    @property
    def endpoint(self) -> str:
        """The generation URL without any query string (safe to show or log)."""
        return str(self._endpoint.copy_with(query=None))

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
                    self._max_retries,
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
        if attempt >= self._max_retries:
            return None
        if transient.retry_after is not None:
            if transient.retry_after > self._retry_cap:
                return None
            return transient.retry_after
        delay = min(_BACKOFF_BASE * 2**attempt, _BACKOFF_CAP, self._retry_cap)
        return float(delay * (1 - 0.25 * self._jitter()))

    async def _attempt(
        self, payload: ImagesRequest, request: GenerationRequest
    ) -> tuple[GeneratedImage, ...]:
        deadline = asyncio.get_running_loop().time() + self._timeout
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
        async with contextlib.AsyncExitStack() as turn:  # the decode turn, once taken
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
                ok = response.is_success
                if ok:
                    deadline += await self._take_decode_turn(turn, clock)
                limit = self._response_limit(request.n) if ok else _ERROR_BODY_LIMIT
                body, complete = await _read_capped(response, limit)
                status, response_headers = response.status_code, response.headers
            request_id = response_headers.get("x-request-id")
            if not ok:
                raise self._status_error(status, response_headers, body)
            if not complete:
                raise ProviderResponseError(
                    f"the answer is larger than {limit} bytes",
                    status=status,
                    request_id=request_id,
                )
            items = self._items(status, response_headers, body, request.n)
            del body  # the raw JSON: only the parsed items are needed from here on
            revised = [item.get("revised_prompt") for item in items]
            blobs = await self._fetch_all(items, deadline, request_id)
            del items  # the base64 text: only the decoded bytes are needed from here on
            images: list[GeneratedImage] = []
            for index, blob in enumerate(blobs):
                data, mime_type, width, height = await asyncio.to_thread(
                    _inspect_image, blob, index, request_id
                )
                del blob
                blobs[index] = data  # drops the original if it was re-encoded
                if f"{width}x{height}" != request.size:
                    log.debug("image %d is %dx%d, asked for %s", index, width, height, request.size)
                prompt = revised[index]
                images.append(
                    GeneratedImage(
                        data=data,
                        mime_type=mime_type,
                        width=width,
                        height=height,
                        seed=request.seed,
                        revised_prompt=prompt if isinstance(prompt, str) and prompt else None,
                    )
                )
            return tuple(images)

    async def _take_decode_turn(
        self, turn: contextlib.AsyncExitStack, clock: asyncio.Timeout
    ) -> float:
        """Wait for a turn to read, decode and check an answer, with the attempt's ``clock``
        stopped meanwhile; the turn is held until ``turn`` closes. Returns the seconds waited,
        by which the attempt's deadline moves."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        due = clock.when()
        clock.reschedule(None)
        await self._decode_turns.acquire()
        turn.callback(self._decode_turns.release)
        waited = loop.time() - started
        if due is not None:
            clock.reschedule(due + waited)
        if waited > 0.5:
            log.debug("image API %s: the answer waited %.2f s for its turn", self._where, waited)
        return waited

    def _response_limit(self, n: int) -> int:
        """The most JSON we read: ``n`` capped images as base64, plus room for the rest."""
        return math.ceil(self._max_download_bytes * 4 / 3) * n + 1024 * 1024

    def _items(self, status: int, headers: httpx.Headers, body: bytes, n: int) -> list[ImageItem]:
        request_id = headers.get("x-request-id")
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProviderResponseError(
                "the answer is not JSON", status=status, request_id=request_id
            ) from exc
        if isinstance(document, dict) and "error" in document and not document.get("data"):
            # Some compatible providers report failures with a 200 status.
            raise self._status_error(status, headers, body)
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
        items: list[ImageItem] = []
        for index, item in enumerate(data[:n]):
            if not isinstance(item, dict) or not (
                _nonempty_str(item.get("b64_json")) or _nonempty_str(item.get("url"))
            ):
                raise ProviderResponseError(
                    f"image {index} has neither 'b64_json' nor 'url'",
                    status=status,
                    request_id=request_id,
                )
            items.append(item)  # type: ignore[arg-type]  # checked just above
        return items

    async def _fetch_all(
        self, items: list[ImageItem], deadline: float, request_id: str | None
    ) -> list[bytes]:
        """The bytes of every item; URLs are downloaded concurrently."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._fetch(index, item, deadline, request_id))
                    for index, item in enumerate(items)
                ]
        except BaseExceptionGroup as failures:
            first = next((e for e in failures.exceptions if isinstance(e, ProviderError)), None)
            if first is None:
                raise
            raise first from first.__cause__
        return [task.result() for task in tasks]

    async def _fetch(
        self, index: int, item: ImageItem, deadline: float, request_id: str | None
    ) -> bytes:
        encoded = item.get("b64_json")
        if isinstance(encoded, str) and encoded:
            return self._decode_base64(encoded, index, request_id)
        url = item.get("url") or ""
        if url.startswith("data:"):
            return self._decode_base64(url, index, request_id)
        async with (
            self._map_errors(f"download of image {index}", retry=False),
            asyncio.timeout_at(deadline),
            self._http.stream(
                "GET", url, timeout=self._http_timeout, follow_redirects=True
            ) as response,
        ):
            if response.status_code != 200:
                raise ProviderResponseError(
                    f"download of image {index} from {response.url.host} failed: "
                    f"HTTP {response.status_code}",
                    status=response.status_code,
                    request_id=request_id,
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_download_bytes:
                raise self._too_large(index, int(declared), request_id)
            blob, complete = await _read_capped(response, self._max_download_bytes)
        if not complete:
            raise self._too_large(index, None, request_id)
        return blob

    def _decode_base64(self, encoded: str, index: int, request_id: str | None) -> bytes:
        if encoded.startswith("data:"):
            encoded = encoded.partition(",")[2]
        compact = "".join(encoded.split())
        if len(compact) // 4 * 3 > self._max_download_bytes + 2:
            raise self._too_large(index, len(compact) // 4 * 3, request_id)
        try:
            # What b64decode(validate=True) does, without first copying the text to bytes.
            blob = binascii.a2b_base64(compact, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise ProviderResponseError(
                f"image {index} is not valid base64", request_id=request_id
            ) from exc
        if len(blob) > self._max_download_bytes:
            raise self._too_large(index, len(blob), request_id)
        return blob

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
        self, status: int, headers: httpx.Headers, body: bytes
    ) -> ProviderError | _Transient:
        """What an unsuccessful HTTP answer means (``body``: its first bytes)."""
        request_id = headers.get("x-request-id")
        kind, code, message = _error_fields(body)
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


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _error_fields(body: bytes) -> tuple[str | None, str | None, str]:
    """``(type, code, message)`` from an error body in OpenAI's shape or a common variant;
    the message is one line, shortened."""
    try:
        document: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, None, "(no JSON error body)" if body.strip() else ""
    error = document.get("error", document) if isinstance(document, dict) else None
    if isinstance(error, str):
        return None, None, _one_line(error)
    if not isinstance(error, dict):
        return None, None, ""
    kind, code = error.get("type"), error.get("code")
    message = error.get("message") or error.get("detail") or ""
    return (
        str(kind) if kind is not None else None,
        str(code) if code is not None else None,
        _one_line(message if isinstance(message, str) else json.dumps(message)),
    )


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


def _inspect_image(blob: bytes, index: int, request_id: str | None) -> tuple[bytes, str, int, int]:
    """Decode ``blob`` fully; return it (re-encoded as PNG if its format is not one chat
    platforms show) with its MIME type and size. Runs in a worker thread."""
    try:
        with Image.open(io.BytesIO(blob)) as image:
            image.load()
            fmt = image.format or ""
            width, height = image.size
            mime_type = _MIME_TYPES.get(fmt)
            if mime_type is None:
                out = io.BytesIO()
                image.save(out, format="PNG")
                blob, mime_type = out.getvalue(), "image/png"
    except Exception as exc:  # Pillow raises many types for bad data; all mean "not an image"
        raise ProviderResponseError(
            f"image {index} is not a readable image ({type(exc).__name__})",
            request_id=request_id,
        ) from exc
    return blob, mime_type, width, height

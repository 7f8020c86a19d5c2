"""A fake OpenAI-compatible image API: a real aiohttp server on 127.0.0.1 (port 0).

It serves ``POST /v1/images/generations`` the way OpenAI does: it checks the bearer key,
validates the body, and answers with real images of the requested size (Pillow), as
``b64_json`` or as ``url`` items that the same server serves under ``/files/``. Every request
it receives (generation and download) is recorded for assertions.

Each test can script the next answers; they are used in order, one per generation request
that passed the key check, and when none is left the server draws images::

    async with FakeImageAPI() as api:
        api.script(rate_limited(retry_after_ms="250"), server_error(502))
        client = OpenAIImageClient(base_url=api.base_url, api_key=SecretStr(api.api_key), ...)
        ...
        assert len(api.generations) == 3

``Stall`` answers wait on ``api.release`` (set by the test, or at shutdown) and set
``api.stalled`` when they start waiting, so a test never sleeps to synchronise. ``HeldBody``
answers send their status, headers and half their body at once and the rest once
``api.release_bodies`` is set (or at shutdown). ``await api.wait_for(predicate)`` waits until
a condition over the recorded requests holds. ``CutBody`` answers drop the connection half
way through their body, as a crashing proxy does. ``latency`` adds a fixed delay to every
generation answer, to imitate a real provider in benchmarks.

Image URLs: ``Images(as_url=True)`` names files this server serves, ``Redirect`` names ones
that redirect (to a file here or to any URL), ``UrlItems`` names whatever URLs the test
gives. ``Bomb`` is a small PNG whose header claims a huge size (a decompression bomb).

Error bodies always carry OpenAI's four keys (``message, type, param, code``), and the
messages are OpenAI's own wording.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import io
import json
import re
import secrets
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fakes.loopback import serve_loopback
from tests.fakes.observer import Observed

__all__ = [
    "FAKE_API_KEY",
    "Answer",
    "Bomb",
    "CutBody",
    "DeadUrl",
    "ErrorReply",
    "FakeImageAPI",
    "HeldBody",
    "Images",
    "NotAnImage",
    "OversizedDownload",
    "RawReply",
    "RecordedRequest",
    "Redirect",
    "Stall",
    "UrlItems",
    "bad_gateway",
    "billing_hard_limit_reached",
    "bomb_png",
    "content_policy_violation",
    "forbidden_region",
    "insufficient_quota",
    "invalid_api_key",
    "moderation_blocked",
    "rate_limited",
    "server_error",
    "service_unavailable",
]

FAKE_API_KEY = "sk-fake-imagine-3f9a1c7e5b2d4a6f8e0c1b3d5f7a9c2e"

GENERATIONS_PATH = "/v1/images/generations"
_SIZE_RE = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")
_MAX_SIDE = 4096
_PIECE = 256 * 1024
_FORMAT_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server saw it; ``headers`` keys are lower-case, ``json`` is the
    parsed body or ``None`` when it was not JSON."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    json: Any


class Answer:
    """Base of the scriptable answers."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Images(Answer):
    """Draw the requested images. ``as_url`` forces URL items whatever ``response_format`` said
    (some providers ignore it); ``count`` overrides how many items come back; ``size``
    draws them at ``(width, height)`` whatever was asked; ``held_files`` serves the URL
    items' files the way ``HeldBody`` serves an answer."""

    revised_prompt: str | None = None
    image_format: str = "PNG"
    as_url: bool = False
    count: int | None = None
    size: tuple[int, int] | None = None
    held_files: bool = False


@dataclass(frozen=True, slots=True)
class ErrorReply(Answer):
    """An error in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    status: int
    message: str
    type: str | None
    code: str | int | None = None
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RawReply(Answer):
    """Exactly these bytes (e.g. malformed JSON, or JSON without ``data``)."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Stall(Answer):
    """Wait until ``FakeImageAPI.release`` is set, then answer ``then``."""

    then: Answer = field(default_factory=Images)


@dataclass(frozen=True, slots=True)
class HeldBody(Answer):
    """Send ``then``'s status, headers and the first half of its body at once, the rest once
    ``FakeImageAPI.release_bodies`` is set: an answer that has arrived but is still being
    transferred."""

    then: Answer = field(default_factory=Images)


@dataclass(frozen=True, slots=True)
class CutBody(Answer):
    """Send ``then``'s status, headers (with its ``Content-Length``, or chunked) and the first
    half of its body, then close the connection."""

    then: Answer = field(default_factory=Images)
    chunked: bool = False


@dataclass(frozen=True, slots=True)
class Bomb(Answer):
    """A 200 whose ``b64_json`` items are ``bomb_png(width, height)``: a PNG of a few hundred
    kB whose pixels would take ``width * height * 4`` bytes once decoded."""

    width: int = 13_000
    height: int = 13_000


@dataclass(frozen=True, slots=True)
class Redirect(Answer):
    """A 200 whose ``url`` items answer ``302`` ``hops`` times, the last time to ``to`` or,
    when it is ``None``, to an image of the requested size on this server."""

    to: str | None = None
    hops: int = 1


@dataclass(frozen=True, slots=True)
class UrlItems(Answer):
    """A 200 whose items are ``{"url": u}`` for each of ``urls``."""

    urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NotAnImage(Answer):
    """A 200 whose ``b64_json`` items decode to bytes that are not an image."""

    data: bytes = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"


@dataclass(frozen=True, slots=True)
class DeadUrl(Answer):
    """A 200 whose ``url`` items point at files this server answers with 404."""


@dataclass(frozen=True, slots=True)
class OversizedDownload(Answer):
    """A 200 whose ``url`` items serve ``size`` bytes; with ``declare_length`` False the body
    is chunked, so only a streaming byte count can catch it."""

    size: int
    declare_length: bool = True


def _error(
    status: int, message: str, type_: str | None, code: str | int | None, **kw: Any
) -> ErrorReply:
    return ErrorReply(status=status, message=message, type=type_, code=code, **kw)


def rate_limited(
    *, retry_after: str | None = None, retry_after_ms: str | None = None
) -> ErrorReply:
    """429 ``rate_limit_exceeded``, with the given ``Retry-After``/``retry-after-ms`` headers."""
    headers = {"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "0"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    return _error(
        429,
        "Rate limit exceeded for images per minute in organization org-fake1234. "
        "Limit: 5/1min. Current: 6/1min. Please visit "
        "https://platform.openai.com/docs/guides/rate-limits to learn how to increase "
        "your rate limit.",
        "requests",
        "rate_limit_exceeded",
        headers=headers,
    )


def insufficient_quota() -> ErrorReply:
    return _error(
        429,
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota",
        "insufficient_quota",
    )


def billing_hard_limit_reached() -> ErrorReply:
    return _error(
        400,
        "Billing hard limit has been reached",
        "invalid_request_error",
        "billing_hard_limit_reached",
    )


def server_error(status: int = 500) -> ErrorReply:
    return _error(
        status,
        "The server had an error processing your request. Sorry about that! You can retry your "
        "request, or contact us through our help center at help.openai.com if you keep seeing "
        "this error.",
        "server_error",
        None,
    )


def bad_gateway() -> ErrorReply:
    # What OpenAI's edge really sends for a 502 (an int code, a Cloudflare type).
    return _error(502, "Bad gateway.", "cf_bad_gateway", 502)


def service_unavailable(*, retry_after: str | None = None) -> ErrorReply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return _error(
        503,
        "The engine is currently overloaded, please try again later.",
        "server_error",
        None,
        headers=headers,
    )


def content_policy_violation() -> ErrorReply:
    return _error(
        400,
        "Your request was rejected as a result of our safety system. Your prompt may contain "
        "text that is not allowed by our safety system.",
        "invalid_request_error",
        "content_policy_violation",
    )


def moderation_blocked() -> ErrorReply:
    return _error(
        400,
        "Your request was rejected by the safety system. If you believe this is an error, "
        "contact us at help.openai.com and include the request ID "
        "req_0123456789abcdef0123456789abcdef.",
        "image_generation_user_error",
        "moderation_blocked",
    )


def invalid_api_key(presented: str = "sk-revoked-0000000000000000wxyz") -> ErrorReply:
    """401 as OpenAI sends it for a wrong key: the key masked but for its ends."""
    return _error(
        401,
        f"Incorrect API key provided: {_mask(presented)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    )


def forbidden_region() -> ErrorReply:
    return _error(
        403,
        "Country, region, or territory not supported",
        "request_forbidden",
        "unsupported_country_region_territory",
    )


def _mask(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


class FakeImageAPI(Observed):
    """``async with FakeImageAPI() as api``: serves on ``api.base_url`` until the block ends."""

    name = "the fake image API"

    def __init__(self, *, api_key: str = FAKE_API_KEY, latency: float = 0.0) -> None:
        super().__init__()
        self.api_key = api_key
        self.latency = latency
        self.requests: list[RecordedRequest] = []
        # Generation requests being answered now, and the most at once: what a cluster-wide
        # cap on concurrent provider calls is checked against.
        self.in_flight = 0
        self.peak_in_flight = 0
        self.release = asyncio.Event()
        self.stalled = asyncio.Event()
        self.release_bodies = asyncio.Event()
        self._script: deque[Answer] = deque()
        self._files: dict[str, tuple[bytes, str]] = {}
        self._oversized: dict[str, OversizedDownload] = {}
        self._redirects: dict[str, str] = {}
        self._held_files: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeImageAPI:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post(GENERATIONS_PATH, self._generations)
        app.router.add_get("/files/{name}", self._file)
        self._runner, self._port = await serve_loopback(app)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release.set()
        self.release_bodies.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what tests use --------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """The API root as the OpenAI SDK takes it, ``/v1`` included."""
        return f"{self.origin}/v1"

    @contextmanager
    def stalling(self) -> Iterator[None]:
        """The next generation request stalls (``Stall``) until the block ends: with one
        provider slot, jobs queue behind it deterministically."""
        self.release.clear()
        self.stalled.clear()
        self.script(Stall())
        try:
            yield
        finally:
            self.release.set()

    async def wait_stalled(self, timeout: float = 10.0) -> None:
        """Until a stalling request has arrived and is waiting."""
        await asyncio.wait_for(self.stalled.wait(), timeout)

    def env(self) -> dict[str, str]:
        """The variables that point the bot at this API, with its key."""
        return {"IMAGE_API_BASE_URL": self.base_url, "IMAGE_API_KEY": self.api_key}

    def script(self, *answers: Answer) -> None:
        """Queue answers for the next generation requests, in order."""
        self._script.extend(answers)

    @property
    def pending(self) -> int:
        """Scripted answers not used yet."""
        return len(self._script)

    @property
    def generations(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == GENERATIONS_PATH]

    @property
    def downloads(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith("/files/")]

    def summary(self) -> str:
        return (
            f"{len(self.generations)} generation request(s), {len(self.downloads)} download(s), "
            f"{self.pending} scripted answer(s) left"
        )

    # -- handlers --------------------------------------------------------------------------

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._generation(request)
        finally:
            self.in_flight -= 1

    async def _generation(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        self._record(request, raw, body)
        await self._notify()
        if self.latency:
            await asyncio.sleep(self.latency)  # imitated provider latency, not synchronisation
        presented = request.headers.get("Authorization", "")
        if not presented.startswith("Bearer ") or not presented[7:].strip():
            return self._error_response(
                _error(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                    "YOUR_KEY), or as the password field (with blank username) if you're "
                    "accessing the API from your browser and are prompted for a username. You "
                    "can obtain an API key from https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    None,
                )
            )
        if presented[7:] != self.api_key:
            return self._error_response(invalid_api_key(presented[7:]))
        answer: Answer = self._script.popleft() if self._script else Images()
        if isinstance(answer, Stall):
            self.stalled.set()
            await self.release.wait()
            answer = answer.then
        if isinstance(answer, HeldBody):
            return await self._hold_body(request, self._answer(body, answer.then))
        if isinstance(answer, CutBody):
            return await self._cut_body(request, self._answer(body, answer.then), answer.chunked)
        return await self._send(request, self._answer(body, answer))

    def _answer(self, body: Any, answer: Answer) -> web.Response:
        if isinstance(answer, ErrorReply):
            return self._error_response(answer)
        if isinstance(answer, RawReply):
            return web.Response(
                status=answer.status,
                body=answer.body,
                content_type=answer.content_type,
                headers=self._headers(),
            )
        problem = _validate(body)
        if problem is not None:
            return self._error_response(problem)
        return self._images_response(body, answer)

    async def _hold_body(self, request: web.Request, reply: web.Response) -> web.StreamResponse:
        data = reply.body
        assert isinstance(data, bytes)
        headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-length"}
        response = web.StreamResponse(status=reply.status, headers=headers)
        response.content_length = len(data)
        try:
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            await self.release_bodies.wait()
            await response.write(data[len(data) // 2 :])
            await response.write_eof()
        except ConnectionError:
            pass  # the client gave up waiting (its timeout), as it may
        return response

    async def _cut_body(
        self, request: web.Request, reply: web.Response, chunked: bool
    ) -> web.StreamResponse:
        data = reply.body
        assert isinstance(data, bytes)
        headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-length"}
        response = web.StreamResponse(status=reply.status, headers=headers)
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        assert request.transport is not None
        request.transport.close()  # flushes what was written, then the connection is gone
        return response

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self._record(request, b"", None)
        await self._notify()
        name = request.match_info["name"]
        if name in self._redirects:
            raise web.HTTPFound(self._redirects[name])
        if name in self._oversized:
            return await self._stream_oversized(request, self._oversized[name])
        found = self._files.get(name)
        if found is None:
            return web.Response(
                status=404,
                text=(
                    '<?xml version="1.0" encoding="utf-8"?><Error><Code>BlobNotFound</Code>'
                    "<Message>The specified blob does not exist.</Message></Error>"
                ),
                content_type="application/xml",
            )
        data, mime_type = found
        reply = web.Response(body=data, content_type=mime_type)
        if name in self._held_files:
            return await self._hold_body(request, reply)
        return await self._send(request, reply)

    async def _send(self, request: web.Request, reply: web.Response) -> web.StreamResponse:
        """``reply``, its body written in pieces if it is large, as a server across the
        network would send it: the tests' event loop is also the client's, and a single 30 MB
        write would hold it for tens of milliseconds."""
        data = reply.body
        if not isinstance(data, bytes) or len(data) <= _PIECE:
            return reply
        headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-length"}
        response = web.StreamResponse(status=reply.status, headers=headers)
        response.content_length = len(data)
        try:
            await response.prepare(request)
            view = memoryview(data)
            for start in range(0, len(data), _PIECE):
                await response.write(view[start : start + _PIECE])
            await response.write_eof()
        except ConnectionError:
            pass  # the client stopped reading (a cap, a timeout), as it may
        return response

    async def _stream_oversized(
        self, request: web.Request, answer: OversizedDownload
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        if answer.declare_length:
            response.content_length = answer.size
        else:
            response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            chunk = b"\x89PNG\r\n\x1a\n" + bytes(64 * 1024 - 8)
            sent = 0
            while sent < answer.size:
                piece = chunk[: answer.size - sent]
                await response.write(piece)
                sent += len(piece)
            await response.write_eof()
        except ConnectionError:
            pass  # the client stopped reading at its cap, as it should
        return response

    # -- helpers ---------------------------------------------------------------------------

    def _record(self, request: web.Request, raw: bytes, body: Any) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(RecordedRequest(request.method, request.path, headers, raw, body))

    def _headers(self) -> dict[str, str]:
        return {
            "x-request-id": "req_" + secrets.token_hex(16),
            "openai-version": "2020-10-01",
            "openai-processing-ms": "1234",
        }

    def _error_response(self, answer: ErrorReply) -> web.Response:
        payload = {
            "error": {
                "message": answer.message,
                "type": answer.type,
                "param": answer.param,
                "code": answer.code,
            }
        }
        return web.Response(
            status=answer.status,
            body=json.dumps(payload).encode(),
            content_type="application/json",
            headers={**self._headers(), **answer.headers},
        )

    def _images_response(self, body: dict[str, Any], answer: Answer) -> web.Response:
        width, height = _size(body.get("size"))
        n = int(body.get("n", 1))
        as_url = body.get("response_format", "url") == "url"
        revised: str | None = None
        items: list[dict[str, Any]] = []
        if isinstance(answer, Images):
            as_url = as_url or answer.as_url
            revised = answer.revised_prompt
            drawn = answer.size or (width, height)
            for index in range(answer.count if answer.count is not None else n):
                data = _draw(
                    *drawn,
                    f"{body['prompt']}|{body.get('seed')}|{index}",
                    answer.image_format,
                )
                items.append(self._item(data, answer.image_format, as_url))
                if answer.held_files and as_url:
                    self._held_files.add(items[-1]["url"].rpartition("/")[2])
        elif isinstance(answer, NotAnImage):
            items = [{"b64_json": base64.b64encode(answer.data).decode()} for _ in range(n)]
        elif isinstance(answer, DeadUrl):
            items = [{"url": f"{self.origin}/files/{secrets.token_hex(8)}.png"} for _ in range(n)]
        elif isinstance(answer, Bomb):
            encoded = base64.b64encode(bomb_png(answer.width, answer.height)).decode()
            items = [{"b64_json": encoded} for _ in range(n)]
        elif isinstance(answer, UrlItems):
            items = [{"url": url} for url in answer.urls]
        elif isinstance(answer, Redirect):
            for index in range(n):
                data = _draw(width, height, f"{body['prompt']}|{body.get('seed')}|{index}", "PNG")
                location = answer.to or self._item(data, "PNG", as_url=True)["url"]
                for _ in range(answer.hops):
                    name = f"{secrets.token_hex(8)}.png"
                    self._redirects[name] = location
                    location = f"{self.origin}/files/{name}"
                items.append({"url": location})
        elif isinstance(answer, OversizedDownload):
            for _ in range(n):
                name = f"{secrets.token_hex(8)}.png"
                self._oversized[name] = answer
                items.append({"url": f"{self.origin}/files/{name}"})
        else:  # pragma: no cover - every Answer type is handled above
            raise TypeError(f"unknown answer {answer!r}")
        if revised is not None:
            for item in items:
                item["revised_prompt"] = revised
        payload = {"created": int(time.time()), "data": items}
        return web.Response(
            body=json.dumps(payload).encode(),
            content_type="application/json",
            headers=self._headers(),
        )

    def _item(self, data: bytes, image_format: str, as_url: bool) -> dict[str, Any]:
        if not as_url:
            return {"b64_json": base64.b64encode(data).decode()}
        name = f"{secrets.token_hex(8)}.{image_format.lower()}"
        self._files[name] = (data, _FORMAT_MIME.get(image_format, "application/octet-stream"))
        return {"url": f"{self.origin}/files/{name}"}


def _invalid(message: str, param: str | None, code: str | None) -> ErrorReply:
    return _error(400, message, "invalid_request_error", code, param=param)


def _validate(body: Any) -> ErrorReply | None:
    """OpenAI's 400s for the mistakes a client can make in this body."""
    if not isinstance(body, dict):
        return _invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON. If you have trouble figuring out how to fix "
            "this, please contact us through our help center at help.openai.com.)",
            None,
            None,
        )
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return _invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool):
        return _invalid(
            f"Invalid type for 'n': expected an integer, but got {type(n).__name__} instead.",
            "n",
            "invalid_type",
        )
    if n < 1:
        return _invalid(
            "Invalid 'n': integer below minimum value. Expected a value >= 1, "
            f"but got {n} instead.",
            "n",
            "integer_below_min_value",
        )
    if n > 10:
        return _invalid(
            "Invalid 'n': integer above maximum value. Expected a value <= 10, "
            f"but got {n} instead.",
            "n",
            "integer_above_max_value",
        )
    size = body.get("size", "1024x1024")
    match = _SIZE_RE.match(size) if isinstance(size, str) else None
    if size != "auto" and (
        match is None or not all(8 <= int(side) <= _MAX_SIDE for side in match.groups())
    ):
        return _invalid(
            f"Invalid value: '{size}'. Supported values are WIDTHxHEIGHT with each side from 8 "
            f"to {_MAX_SIDE}, or 'auto'.",
            "size",
            "invalid_value",
        )
    response_format = body.get("response_format", "url")
    if response_format not in ("url", "b64_json"):
        return _invalid(
            f"Invalid value: '{response_format}'. Supported values are: 'url' and 'b64_json'.",
            "response_format",
            "invalid_value",
        )
    return None


def _size(value: Any) -> tuple[int, int]:
    if not isinstance(value, str) or value == "auto":
        return 1024, 1024
    width, _, height = value.partition("x")
    return int(width), int(height)


@functools.cache
def bomb_png(width: int, height: int) -> bytes:
    """A valid 8-bit RGB PNG of ``width`` x ``height`` black pixels, built without ever holding
    them: the rows are deflated in identical blocks (each ended by a full flush, so each
    compresses to the same bytes), which are repeated."""
    row = bytes(1 + 3 * width)  # filter type 0, then the pixels
    per_block = max(1, (4 << 20) // len(row))
    blocks, rest = divmod(height, per_block)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(row * per_block) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.compress(row * rest) + deflate.flush()
    checksum = 1
    for _ in range(blocks):
        checksum = zlib.adler32(row * per_block, checksum)
    checksum = zlib.adler32(row * rest, checksum)
    idat = b"\x78\xda" + block * blocks + tail + struct.pack(">I", checksum)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _draw(width: int, height: int, seed_text: str, image_format: str) -> bytes:
    """A real image: a colour derived from the prompt, seed and index, with a contrasting band."""
    digest = hashlib.sha256(seed_text.encode()).digest()
    image = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    band = Image.new("RGB", (width, max(1, height // 8)), (255 - digest[0], 255 - digest[1], 0))
    image.paste(band, (0, height // 2))
    out = io.BytesIO()
    if image_format == "PNG":
        image.save(out, format="PNG", compress_level=1)
    else:
        image.save(out, format=image_format)
    return out.getvalue()

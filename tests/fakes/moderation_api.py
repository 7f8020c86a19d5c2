"""A fake OpenAI-compatible moderation endpoint: a real aiohttp server on 127.0.0.1 (port 0).

It serves ``POST /v1/moderations`` the way OpenAI does: it checks the bearer key, takes
``input`` as a string or a list of strings, and answers ``{"id", "model", "results": [...]}``
with one result per input, each with ``flagged``, ``categories``, ``category_scores`` and
``category_applied_input_types`` over the omni-moderation categories. An input is flagged
when it contains one of ``flag_words`` (word -> the categories it sets). Errors use OpenAI's
four-key shape. Tests can script the next answers instead::

    async with FakeModerationAPI(flag_words={"gore": ("violence/graphic",)}) as api:
        api.script(ModerationError(500, "boom", "server_error"))
        ...
        assert api.requests[0].json["input"] == ["a prompt"]
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from tests.fakes.loopback import serve_loopback

__all__ = [
    "CATEGORIES",
    "FAKE_MODERATION_KEY",
    "FakeModerationAPI",
    "ModerationError",
    "ModerationRaw",
    "ModerationStall",
    "RecordedModeration",
]

FAKE_MODERATION_KEY = "sk-mod-fake-9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a"

CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


@dataclass(frozen=True, slots=True)
class RecordedModeration:
    headers: Mapping[str, str]
    json: Any


@dataclass(frozen=True, slots=True)
class ModerationError:
    status: int
    message: str
    type: str | None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class ModerationRaw:
    body: bytes
    status: int = 200


@dataclass(frozen=True, slots=True)
class ModerationStall:
    """Wait until the server closes (the client's timeout fires first)."""


@dataclass
class FakeModerationAPI:
    api_key: str = FAKE_MODERATION_KEY
    model: str = "omni-moderation-latest"
    flag_words: Mapping[str, Sequence[str]] = field(
        default_factory=lambda: {"gore": ("violence", "violence/graphic")}
    )
    requests: list[RecordedModeration] = field(default_factory=list)
    _script: deque[ModerationError | ModerationRaw | ModerationStall] = field(default_factory=deque)
    _runner: web.AppRunner | None = None
    _port: int = 0
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> FakeModerationAPI:
        app = web.Application()
        app.router.add_post("/v1/moderations", self._moderations)
        self._runner, self._port = await serve_loopback(app, shutdown_timeout=1.0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def script(self, *answers: ModerationError | ModerationRaw | ModerationStall) -> None:
        self._script.extend(answers)

    @staticmethod
    def _error(status: int, message: str, type_: str | None, code: str | None) -> web.Response:
        body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return web.json_response(body, status=status)

    def _result(self, text: str) -> dict[str, Any]:
        lowered = text.lower()
        hits = {c for word, cats in self.flag_words.items() if word in lowered for c in cats}
        return {
            "flagged": bool(hits),
            "categories": {c: c in hits for c in CATEGORIES},
            "category_scores": {c: 0.97 if c in hits else 0.0001 for c in CATEGORIES},
            "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
        }

    async def _moderations(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        self.requests.append(
            RecordedModeration({k.lower(): v for k, v in request.headers.items()}, body)
        )
        presented = request.headers.get("Authorization", "")
        if presented != f"Bearer {self.api_key}":
            return self._error(
                401,
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if self._script:
            answer = self._script.popleft()
            if isinstance(answer, ModerationStall):
                self.stalled.set()
                await self._closing.wait()
                return web.Response(status=503)
            if isinstance(answer, ModerationError):
                return self._error(answer.status, answer.message, answer.type, answer.code)
            return web.Response(
                status=answer.status, body=answer.body, content_type="application/json"
            )
        inputs = body.get("input") if isinstance(body, dict) else None
        if isinstance(inputs, str):
            inputs = [inputs]
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, str) for i in inputs)
        ):
            return self._error(400, "'input' is a required property", "invalid_request_error", None)
        return web.json_response(
            {
                "id": f"modr-{secrets.token_hex(12)}",
                "model": body.get("model") or self.model,
                "results": [self._result(text) for text in inputs],
            }
        )

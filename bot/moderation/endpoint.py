"""The moderation endpoint: an OpenAI-compatible ``POST {base}/moderations``, asked about each
prompt when ``MODERATION_API_BASE_URL`` is set (``bot.moderation.screening`` decides what a
flag, or no usable answer, means). Its errors never carry the key or the message text, which
may echo it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from bot.errors import (
    ConfigError,
)

__all__ = [
    "DEFAULT_MODERATION_MODEL",
    "FailPolicy",
    "ModerationClient",
    "ModerationUnavailableError",
]

log = logging.getLogger(__name__)

DEFAULT_MODERATION_MODEL = "omni-moderation-latest"

FailPolicy = Literal["refuse", "allow"]
"""What a prompt gets when the endpoint gives no usable answer."""


class ModerationUnavailableError(Exception):
    """The moderation endpoint gave no usable answer; ``detail`` is safe to log."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _moderations_url(base_url: str) -> httpx.URL:
    url = httpx.URL(base_url.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError("MODERATION_API_BASE_URL must be an http(s) URL")
    path = url.path.rstrip("/") or "/v1"
    return url.copy_with(path=f"{path}/moderations", query=None, fragment=None)


class ModerationClient:
    """An OpenAI-compatible ``POST {base}/moderations`` client on the process's HTTP client.

    ``base_url`` is the API root like ``IMAGE_API_BASE_URL``, ``/v1`` included (a bare origin
    gets ``/v1``). The key rides only in the ``Authorization`` header and never appears in a
    log line or an exception."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: SecretStr | None,
        model: str = DEFAULT_MODERATION_MODEL,
        fail_policy: FailPolicy = "refuse",
        timeout: float = 10.0,
    ) -> None:
        if fail_policy not in ("refuse", "allow"):
            raise ConfigError("MODERATION_FAIL_POLICY must be refuse or allow")
        self._http = http
        self._url = _moderations_url(base_url)
        self._where = f"{self._url.host}{self._url.path}"
        self._api_key = api_key
        self.model = model
        self.fail_policy: FailPolicy = fail_policy
        self._timeout = httpx.Timeout(timeout, connect=min(5.0, timeout))

    @property
    def endpoint(self) -> str:
        """Host and path of the endpoint (safe to log: no query, no user info)."""
        return self._where

    async def flagged(self, texts: Sequence[str]) -> str | None:
        """The flagged categories (``"sexual, violence"``) if any text is flagged, else
        ``None``. Raises ``ModerationUnavailableError`` when there is no usable answer."""
        headers = {}
        if self._api_key is not None and self._api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        try:
            response = await self._http.post(
                self._url,
                json={"model": self.model, "input": list(texts)},
                headers=headers,
                timeout=self._timeout,
            )
        except httpx.TimeoutException:
            raise ModerationUnavailableError("timed out") from None
        except httpx.HTTPError as exc:
            raise ModerationUnavailableError(f"request failed ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise ModerationUnavailableError(f"HTTP {response.status_code}{_error_code(response)}")
        try:
            results = response.json()["results"]
            if not isinstance(results, list) or not results:
                raise ValueError("no results")
            flagged: set[str] = set()
            any_flagged = False
            for result in results:
                if not isinstance(result.get("flagged"), bool):
                    raise ValueError("no flagged field")
                if result["flagged"]:
                    any_flagged = True
                    categories = result.get("categories") or {}
                    flagged.update(name for name, on in categories.items() if on is True)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModerationUnavailableError("malformed response") from None
        if not any_flagged:
            return None
        return ", ".join(sorted(flagged)) or "flagged"


def _error_code(response: httpx.Response) -> str:
    """`` (code)`` from an OpenAI-shaped error body, or nothing; never the message, which
    may echo (part of) the key."""
    try:
        error: Any = response.json()["error"]
        code = error.get("code") or error.get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""
    return f" ({code})" if isinstance(code, str | int) and code != "" else ""

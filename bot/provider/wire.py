"""Wire types for ``POST {base}/images/generations`` (OpenAI's API and compatible ones).

These describe JSON as it travels; ``bot.provider.client`` turns them into ``bot.models`` values and
nothing else imports them. Every field of a response is ``NotRequired``: compatible providers
leave things out, so the client checks each one before use.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

__all__ = [
    "ErrorBody",
    "ErrorEnvelope",
    "ImageItem",
    "ImagesRequest",
    "ImagesResponse",
    "ResponseFormat",
]

ResponseFormat = Literal["url", "b64_json"]


class ImagesRequest(TypedDict):
    """The body we send. ``seed`` and ``negative_prompt`` are extensions that many compatible
    providers accept; they are sent only when the catalog says the model takes them."""

    model: str
    prompt: str
    n: int
    size: str
    response_format: ResponseFormat
    seed: NotRequired[int]
    negative_prompt: NotRequired[str]


class ImageItem(TypedDict):
    """One entry of ``data``: exactly one of ``b64_json`` and ``url`` is expected."""

    b64_json: NotRequired[str | None]
    url: NotRequired[str | None]
    revised_prompt: NotRequired[str | None]


class ImagesResponse(TypedDict):
    """A 200 answer. Only ``created`` is required by OpenAI's schema; ``data`` is what we use."""

    created: NotRequired[int]
    data: NotRequired[list[ImageItem]]


class ErrorBody(TypedDict):
    """OpenAI always sends all four keys; ``code`` is sometimes an int (e.g. 502 from the
    edge) and ``param``/``code`` are often null."""

    message: str
    type: str | None
    param: str | None
    code: str | int | None


class ErrorEnvelope(TypedDict):
    error: ErrorBody

"""Wire types for ``POST {base}/images/generations`` (OpenAI's API and compatible ones).

This describes the JSON we send; ``bot.provider.client`` builds it and nothing else imports it.
Answers have no types here: compatible providers leave fields out or send other types, so the
client checks each field of an answer (read by ``bot.provider.answer``) before use.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

__all__ = ["ImagesRequest", "ResponseFormat"]

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

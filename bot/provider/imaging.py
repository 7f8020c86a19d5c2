"""Checking and re-encoding generated images: to the size that was asked, and to fit a
platform's upload limit.

``conform`` checks an image from the provider: it reads the dimensions from the header
(Pillow's ``Image.open`` is lazy) and refuses an image more than twice the asked width or
height, or over 4096 on a side, before decoding a pixel, so a small file claiming 13000x13000
(676 MB of pixels) costs nothing; then it decodes the image fully (so a truncated file fails
here, not on the platform) and scales down one larger than asked to fit the asked size.

Discord refuses an attachment over the interaction's ``attachment_size_limit`` (10 MiB by
default, less in some servers and tests). ``fit_within`` keeps an image that already fits
untouched; otherwise it re-encodes it lossily (WebP, or JPEG where Pillow lacks WebP) at
decreasing quality, then downscales, and always returns bytes that decode as an image.
CPU-bound: call it from a worker thread (``asyncio.to_thread``), or through a ``Refitter``.

A re-encoding holds the image's pixels and the encoder's working memory (about 50 MiB for a
2048x2048 picture, the pixels decoded once and not copied), on top of the source bytes; done
for every image of every finished job at once, that took the bot from 632 to 929 MiB with 4
jobs of four 24 MiB PNGs. ``Refitter`` is the process's one bound on it: ``slots``
re-encodings at a time (2: both cores), each in a worker thread, the others waiting their
turn in arrival order. Given the provider client's ``ByteBudget``, ``holding`` also counts
the source images that need re-encoding against it until their job is delivered, so the
client reads no further answers while they wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import replace

from PIL import Image, UnidentifiedImageError, features

from bot.models import GeneratedImage
from bot.provider.budget import ByteBudget

__all__ = [
    "MAX_SIDE",
    "MIN_FIT_BYTES",
    "ImageTooLargeError",
    "Refitter",
    "conform",
    "fit_within",
]

log = logging.getLogger(__name__)

MAX_SIDE = 4096
_MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
# Formats a downscaled image is saved in: its own when chat platforms show it, else PNG.
_SAVE_AS = {"JPEG": "JPEG", "WEBP": "WEBP"}

# Below this no useful picture survives; a 16x16 JPEG already needs several hundred bytes.
MIN_FIT_BYTES = 2_048
_QUALITIES = (90, 78, 64, 50, 38)
_MIN_SIDE = 16
# A lower quality rarely saves more than this factor; past it, downscale straight away.
_QUALITY_REACH = 3.0


class ImageTooLargeError(ValueError):
    """The header claims more pixels than allowed; nothing was decoded. ``size`` is the
    claimed ``(width, height)``, or ``None`` when Pillow refused to open it at all."""

    def __init__(self, size: tuple[int, int] | None, limit: tuple[int, int]) -> None:
        claimed = f"{size[0]}x{size[1]}" if size else "over Pillow's decompression-bomb limit"
        super().__init__(f"{claimed}, more than {limit[0]}x{limit[1]}")
        self.size = size
        self.limit = limit


def conform(data: bytes, asked: tuple[int, int] | None) -> tuple[bytes, str, int, int]:
    """``(data, mime_type, width, height)`` of a provider's image, checked as the module
    says, re-encoded only if it was larger than ``asked`` (``None``: any size up to
    ``MAX_SIDE``) or in a format chat platforms do not show (then as PNG).

    Raises ``ImageTooLargeError`` before decoding anything too large, and any of Pillow's
    exceptions for data that is not an image. CPU-bound: call it from a worker thread."""
    limit = (min(2 * asked[0], MAX_SIDE), min(2 * asked[1], MAX_SIDE)) if asked else (MAX_SIDE,) * 2
    try:
        opened = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(None, limit) from exc
    with opened as image:
        width, height = image.size
        if width > limit[0] or height > limit[1]:
            raise ImageTooLargeError((width, height), limit)
        image.load()
        fmt = image.format or ""
        mime_type = _MIME_TYPES.get(fmt)
        if asked and (width > asked[0] or height > asked[1]):
            scale = min(asked[0] / width, asked[1] / height)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            log.debug("scaling a %dx%d image down to %dx%d", width, height, *size)
            smaller = image.resize(size, Image.Resampling.LANCZOS)
            save_as = _SAVE_AS.get(fmt, "PNG")
            return _save(smaller, save_as), _MIME_TYPES[save_as], size[0], size[1]
        if mime_type is None:
            return _save(image, "PNG"), "image/png", width, height
    return data, mime_type, width, height


def _save(picture: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "PNG":
        picture.save(out, format="PNG")
    else:
        picture.save(out, format=fmt, quality=90)
    return out.getvalue()


def fit_within(image: GeneratedImage, max_bytes: int) -> GeneratedImage:
    """``image`` if its bytes fit in ``max_bytes``; otherwise a smaller re-encoding of it.

    Raises ``ValueError`` if ``max_bytes`` is below ``MIN_FIT_BYTES`` or the data is not an
    image Pillow can read.
    """
    if len(image.data) <= max_bytes:
        return image
    if max_bytes < MIN_FIT_BYTES:
        raise ValueError(f"cannot fit an image in {max_bytes} bytes (minimum {MIN_FIT_BYTES})")
    picture = _decode(image.data)
    use_webp = bool(features.check("webp"))
    if not use_webp:
        picture = _flatten(picture)
    mime = "image/webp" if use_webp else "image/jpeg"
    width, height = picture.size
    scale = 1.0
    candidate = picture
    while True:
        size = 0
        for quality in _QUALITIES:
            data = _encode(candidate, webp=use_webp, quality=quality)
            size = len(data)
            if size <= max_bytes:
                log.debug(
                    "re-encoded a %dx%d %s image of %d bytes as %dx%d %s q%d, %d bytes",
                    width,
                    height,
                    image.mime_type,
                    len(image.data),
                    candidate.width,
                    candidate.height,
                    mime,
                    quality,
                    size,
                )
                return replace(
                    image,
                    data=data,
                    mime_type=mime,
                    width=candidate.width,
                    height=candidate.height,
                )
            if size > max_bytes * _QUALITY_REACH:
                break
        # Bytes grow roughly with the pixel count: aim just under the cap, at least -15 %.
        scale *= min(0.85, max(0.25, math.sqrt(max_bytes / size) * 0.9))
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if min(new_size) < _MIN_SIDE:
            raise ValueError(f"cannot fit a {width}x{height} image in {max_bytes} bytes")
        candidate = picture.resize(new_size, Image.Resampling.LANCZOS)


class Refitter:
    """``fit_within`` off the event loop, at most ``slots`` images at a time in the process
    (one ``Refitter`` is shared by every job)."""

    def __init__(self, slots: int = 2, *, budget: ByteBudget | None = None) -> None:
        if slots < 1:
            raise ValueError("a refitter needs at least one slot")
        self.slots = slots
        self._turns = asyncio.Semaphore(slots)
        self._budget = budget

    @contextlib.contextmanager
    def holding(self, images: Sequence[GeneratedImage], max_bytes: int) -> Iterator[None]:
        """While inside, the bytes of those ``images`` over ``max_bytes`` count against the
        budget (granted at once: they are in memory already)."""
        if self._budget is None:
            yield
            return
        lease = self._budget.lease()
        lease.hold(sum(len(image.data) for image in images if len(image.data) > max_bytes))
        try:
            yield
        finally:
            lease.release()

    async def fit(self, image: GeneratedImage, max_bytes: int) -> GeneratedImage:
        """``image`` if it fits in ``max_bytes``, else a re-encoding of it made in a worker
        thread once a slot is free. Raises like ``fit_within``."""
        if len(image.data) <= max_bytes:
            return image
        async with self._turns:
            return await asyncio.to_thread(fit_within, image, max_bytes)


def _decode(data: bytes) -> Image.Image:
    """The pixels of ``data`` as RGB or RGBA. Not closed on purpose: closing an image frees
    its pixels, and copying them out first would hold two copies at once (16 MiB more per
    2048x2048 picture); the file is an in-memory buffer, nothing leaks."""
    try:
        opened = Image.open(io.BytesIO(data))
        opened.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc
    if opened.mode not in ("RGB", "RGBA"):
        return opened.convert("RGBA" if _has_alpha(opened) else "RGB")
    return opened


def _has_alpha(picture: Image.Image) -> bool:
    return picture.mode in ("RGBA", "LA", "PA") or (
        picture.mode == "P" and "transparency" in picture.info
    )


def _flatten(picture: Image.Image) -> Image.Image:
    """RGB for JPEG: transparent areas become white rather than black."""
    if not _has_alpha(picture):
        return picture.convert("RGB")
    rgba = picture.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _encode(picture: Image.Image, *, webp: bool, quality: int) -> bytes:
    buffer = io.BytesIO()
    if webp:
        # Method 1, not libwebp's default 4: from method 3 up the encoder keeps about 100 MiB
        # of working memory for a 2048x2048 picture, at 1 about 30 MiB, for files a few
        # per cent larger (the quality steps absorb that) and a faster encode.
        picture.save(buffer, format="WEBP", quality=quality, method=1)
    else:
        picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()

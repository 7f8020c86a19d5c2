"""Re-encoding generated images to fit a platform's upload limit.

Discord refuses an attachment over the interaction's ``attachment_size_limit`` (10 MiB by
default, less in some servers and tests). ``fit_within`` keeps an image that already fits
untouched; otherwise it re-encodes it lossily (WebP, or JPEG where Pillow lacks WebP) at
decreasing quality, then downscales, and always returns bytes that decode as an image.
CPU-bound: call it from a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import replace

from PIL import Image, UnidentifiedImageError, features

from bot.models import GeneratedImage

__all__ = ["MIN_FIT_BYTES", "fit_within"]

log = logging.getLogger(__name__)

# Below this no useful picture survives; a 16x16 JPEG already needs several hundred bytes.
MIN_FIT_BYTES = 2_048
_QUALITIES = (90, 78, 64, 50, 38)
_MIN_SIDE = 16
# A lower quality rarely saves more than this factor; past it, downscale straight away.
_QUALITY_REACH = 3.0


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
    elif not _has_alpha(picture):
        picture = picture.convert("RGB")
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


def _decode(data: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            if opened.mode not in ("RGB", "RGBA"):
                return opened.convert("RGBA" if _has_alpha(opened) else "RGB")
            return opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc


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
        picture.save(buffer, format="WEBP", quality=quality, method=4)
    else:
        picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()

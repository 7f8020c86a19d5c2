"""The offline preview provider: labelled placeholder images drawn locally, at no cost.

Used whenever ``IMAGE_API_KEY`` is unset, so the bot runs end to end on a fresh machine. The
same seed always draws the same picture.
"""

from __future__ import annotations

import asyncio
import io
import random
import textwrap

from PIL import Image, ImageDraw, ImageFont

from bot.models import GeneratedImage, GenerationRequest, ModelSpec, parse_size

__all__ = ["PreviewProvider", "draw_preview"]


class PreviewProvider:
    """Satisfies ``ImageProvider``; ``billable`` is False, so jobs cost $0 (but still count
    images against image limits)."""

    @property
    def billable(self) -> bool:
        return False

    async def generate(
        self, request: GenerationRequest, spec: ModelSpec
    ) -> tuple[GeneratedImage, ...]:
        seed = request.seed or 0
        # Drawing a 2048x2048 PNG takes a noticeable fraction of a second: keep it off the loop.
        return tuple(
            await asyncio.gather(
                *(
                    asyncio.to_thread(draw_preview, request, spec, seed + index, index)
                    for index in range(request.n)
                )
            )
        )


def draw_preview(
    request: GenerationRequest, spec: ModelSpec, seed: int, index: int = 0
) -> GeneratedImage:
    width, height = parse_size(request.size)
    rng = random.Random(seed)
    top = tuple(rng.randrange(40, 200) for _ in range(3))
    bottom = tuple(rng.randrange(40, 200) for _ in range(3))
    # A vertical gradient, built as one column and stretched: fast at any size.
    column = Image.linear_gradient("L").resize((1, height))
    image = Image.composite(
        Image.new("RGB", (1, height), bottom), Image.new("RGB", (1, height), top), column
    ).resize((width, height))
    draw = ImageDraw.Draw(image, "RGBA")
    unit = min(width, height)
    for _ in range(12):
        radius = rng.randrange(unit // 20, unit // 5)
        x, y = rng.randrange(width), rng.randrange(height)
        colour = (*(rng.randrange(256) for _ in range(3)), 90)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)

    margin = unit // 16
    title = ImageFont.load_default(size=max(16, unit // 8))
    body = ImageFont.load_default(size=max(12, unit // 28))
    panel = (margin, margin, width - margin, height - margin)
    draw.rounded_rectangle(panel, radius=margin // 2, fill=(0, 0, 0, 150))
    x, y = margin * 2, margin * 2
    draw.text((x, y), "PREVIEW", font=title, fill=(255, 255, 255, 255))
    y += int(unit / 8 * 1.4)
    chars = max(10, int((width - 4 * margin) / (unit / 28 * 0.55)))
    lines = textwrap.wrap(request.prompt, width=chars)[:8]
    for line in lines:
        draw.text((x, y), line, font=body, fill=(255, 255, 255, 255))
        y += int(unit / 28 * 1.35)
    y += unit // 40
    footer = [f"model: {spec.id}", f"size: {request.size}  seed: {seed}  image {index + 1}"]
    footer.append("offline preview: set IMAGE_API_KEY for real images")
    for line in footer:
        draw.text((x, y), line, font=body, fill=(220, 220, 220, 255))
        y += int(unit / 28 * 1.35)

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return GeneratedImage(
        data=buffer.getvalue(), mime_type="image/png", width=width, height=height, seed=seed
    )

"""Saving results to disk for the shell and ``imagine-bot generate``."""

from __future__ import annotations

import re
from pathlib import Path

from bot.models import GenerationResult

__all__ = ["save_images"]

_UNSAFE = re.compile(r"[^a-z0-9]+")


def save_images(result: GenerationResult, out_dir: Path) -> list[Path]:
    """Write each image as ``<prompt-slug>-<job>-<i>.<ext>`` under ``out_dir``; return paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = _UNSAFE.sub("-", result.request.prompt.casefold()).strip("-")[:40] or "image"
    paths = []
    for index, image in enumerate(result.images, start=1):
        path = out_dir / f"{slug}-{result.job_id[:8]}-{index}.{image.extension}"
        path.write_bytes(image.data)
        paths.append(path)
    return paths

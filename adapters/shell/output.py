"""Saving results to disk for the shell and ``imagine-bot generate``."""

from __future__ import annotations

import os
import re
from pathlib import Path

from bot.directory import probe_directory
from bot.errors import ConfigError
from bot.messages import out_directory_text
from bot.models import GenerationResult

__all__ = ["check_out_dir", "save_images"]

_UNSAFE = re.compile(r"[^a-z0-9]+")


def check_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and make sure the images can be written there, before any is
    generated (and charged): ``ConfigError`` with what to do otherwise."""
    try:
        probe_directory(out_dir)
    except OSError as exc:
        shown = exc.filename if isinstance(exc.filename, str) else str(out_dir)
        raise ConfigError(out_directory_text(shown, exc, uid=os.geteuid())) from None


def save_images(result: GenerationResult, out_dir: Path) -> list[Path]:
    """Write each image as ``<prompt-slug>-<job>-<i>.<ext>`` under ``out_dir``; return paths.
    Raises ``OSError`` (e.g. a full disk)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = _UNSAFE.sub("-", result.request.prompt.casefold()).strip("-")[:40] or "image"
    paths = []
    for index, image in enumerate(result.images, start=1):
        path = out_dir / f"{slug}-{result.job_id[:8]}-{index}.{image.extension}"
        path.write_bytes(image.data)
        paths.append(path)
    return paths

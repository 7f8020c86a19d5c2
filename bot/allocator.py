"""The C allocator's one setting that bounds the bot's memory with large images.

glibc's ``malloc`` serves blocks over its mmap threshold (128 KiB at first) with a mapping of
their own, returned to the system when freed. But the threshold is dynamic: each time such a
block is freed it rises to that block's size, up to 32 MiB. After the first 24 MiB PNG is
freed, every later image, answer body and pixel buffer up to that size comes from the heap
instead, and the heap keeps the pages of freed blocks for reuse, so the process's memory
stays at its worst moment and grows with fragmentation. With 24 MiB PNGs that was 170 to
180 MiB more at the peak (4 jobs of n=4, measured with ``bench/memory.py --bot``).

Fixing the threshold at 1 MiB (which also switches the dynamic rise off) maps every large
buffer on its own; freeing it gives its pages back at once. Mapping costs a system call and
page faults per block, which is nothing beside decoding a megabyte of image.

An operator's own ``MALLOC_MMAP_THRESHOLD_`` (glibc reads it at start-up) wins. Other C
libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

__all__ = ["MMAP_THRESHOLD", "fix_mmap_threshold"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
_OPERATOR_SETTING = "MALLOC_MMAP_THRESHOLD_"


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Set glibc's mmap threshold to ``threshold`` bytes for this process; ``True`` if it
    was set here (``False``: not glibc, or the operator set it in the environment)."""
    if _OPERATOR_SETTING in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        # The symbols already loaded into this process: no library search (find_library runs
        # ldconfig in a subprocess), nothing added to every command's start-up.
        done = bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
    if not done:
        log.debug("mallopt refused an mmap threshold of %d bytes", threshold)
    return done

"""Proving that a directory is writable before work that would fail late in it (the database,
the images ``--out`` saves)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

__all__ = ["probe_directory"]


def probe_directory(directory: Path) -> None:
    """Create ``directory`` if needed and prove that this process can write there by writing
    a file: ``os.access`` says yes to root on a read-only mount and knows nothing of ACLs.
    Raises ``OSError``; its ``filename`` is the existing directory that refused."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        existing = next((p for p in directory.parents if p.is_dir()), None)
        if existing is None or exc.errno in (errno.ENOTDIR, errno.EEXIST):
            raise
        raise OSError(exc.errno, exc.strerror, str(existing)) from None
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".imagine-bot-", suffix=".probe")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(directory)) from None
    os.close(fd)
    os.unlink(probe)

"""The mmap threshold the bot fixes at start-up, in a process of its own each time (it is a
process-wide setting), and how an operator's own setting wins."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.fakes.process import REPO_ROOT

_PROBE = "from bot.allocator import fix_mmap_threshold; print(fix_mmap_threshold())"


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**clean, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


@glibc_only
def test_the_threshold_is_fixed_on_glibc() -> None:
    assert _probe() == "True"


@glibc_only
def test_an_operators_own_threshold_is_left_alone() -> None:
    assert _probe(MALLOC_MMAP_THRESHOLD_="4194304") == "False"

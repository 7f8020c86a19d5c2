"""Keeps the ``e2e`` marker true: a test not marked ``e2e`` may neither serve a fake on a
socket (``serve_loopback``) nor start the bot (``BotProcess``), so ``pytest -m "not e2e"`` is
the fast, in-process part of the suite. ``tests/conftest.py`` tells this module which test is
being set up; outside pytest (the benchmarks) everything is allowed."""

from __future__ import annotations

__all__ = ["allow", "require"]

_allowed = True
_test = ""


def allow(allowed: bool, *, test: str = "") -> None:
    """Called before each test's set-up: whether that test (``test``, its node id) is e2e."""
    global _allowed, _test
    _allowed, _test = allowed, test


def require(what: str) -> None:
    """Fail unless the current test is marked e2e; ``what`` says what it tried to start."""
    if not _allowed:
        raise AssertionError(
            f"{_test} starts {what}: mark it e2e (pytestmark = pytest.mark.e2e, or "
            "@pytest.mark.e2e on the test), so that `pytest -m 'not e2e'` stays in-process"
        )

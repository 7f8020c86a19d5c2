"""Helpers shared by the store tests: store factories and the requests they take (the clock
is ``tests.fakes.clock.FakeClock``; a store reads ``clock.utc``).

The contract suites (``tests/test_ledger.py``, ``tests/test_moderation_store.py``) ask
``open_store_of(kind, ...)`` for a store, opened through ``bot.store.database.open_store`` as
the bot opens it; a new implementation (e.g. PostgreSQL) joins both suites by adding its kind
and URL to ``_URLS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bot.models import GenerationRequest, Limits, Requester
from bot.store.database import Store, open_store
from bot.store.ledger import Ledger
from tests.fakes import postgres
from tests.fakes.clock import FakeClock

__all__ = [
    "LEDGER_KINDS",
    "STORE_KINDS",
    "open_ledger",
    "open_store_of",
    "request",
    "requester",
]

# Each kind's DATABASE_URL, given the test's temporary directory.
_URLS: dict[str, Callable[[Path], str]] = {
    "sqlite-memory": lambda tmp: "sqlite://:memory:",
    "sqlite-file": lambda tmp: f"sqlite:///{tmp / 'ledger.db'}",
    "postgres": lambda tmp: postgres.database_url(str(tmp)),
}
STORE_KINDS: tuple[str, ...] = ("sqlite-memory", "sqlite-file", "postgres")
LEDGER_KINDS: tuple[str, ...] = STORE_KINDS


async def open_store_of(
    kind: str,
    tmp_path: Path,
    *,
    defaults: Limits | None = None,
    clock: FakeClock | None = None,
) -> Store:
    """A store of ``kind`` (one of ``STORE_KINDS`` or ``LEDGER_KINDS``); a second call with the same
    ``tmp_path`` opens the same database, except in memory."""
    if kind not in _URLS:
        raise ValueError(kind)
    utc = None if clock is None else clock.utc
    return await open_store(_URLS[kind](tmp_path), defaults=defaults, clock=utc)


async def open_ledger(
    kind: str,
    tmp_path: Path,
    *,
    defaults: Limits | None = None,
    clock: FakeClock | None = None,
) -> Ledger:
    """The ledger of ``open_store_of(kind, ...)``; closing it closes the store."""
    return (await open_store_of(kind, tmp_path, defaults=defaults, clock=clock)).ledger


def requester(
    user: str = "alice",
    *,
    workspace: str = "G1",
    platform: str = "discord",
    roles: tuple[str, ...] = (),
) -> Requester:
    return Requester(
        platform=platform,
        workspace_id=workspace,
        channel_id="C1",
        user_id=user,
        role_ids=roles,
        display_name=user.title(),
    )


def request(n: int = 1, *, prompt: str = "a red fox in snow") -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        model="stability/sdxl",
        size="1024x1024",
        n=n,
        seed=42,
        negative_prompt="blurry",
    )

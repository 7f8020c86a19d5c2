"""Helpers shared by the ledger tests: a settable clock and ledger factories.

The contract suite asks ``open_ledger(kind, ...)`` for a ledger; a new implementation (e.g.
PostgreSQL) joins the suite by adding its kind to ``LEDGER_KINDS``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.models import GenerationRequest, Limits, Requester
from bot.store.ledger import SqliteLedger

__all__ = ["LEDGER_KINDS", "FakeClock", "open_ledger", "request", "requester"]

LEDGER_KINDS = ("sqlite-memory", "sqlite-file")

# A Tuesday in the middle of a 30-day month, mid-morning UTC.
START = datetime(2026, 6, 16, 9, 30, tzinfo=UTC)


class FakeClock:
    """An aware UTC clock that moves only when told to."""

    def __init__(self, start: datetime = START) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)

    def set(self, moment: datetime) -> None:
        self.current = moment


async def open_ledger(
    kind: str,
    tmp_path: Path,
    *,
    defaults: Limits | None = None,
    clock: FakeClock | None = None,
) -> SqliteLedger:
    if kind == "sqlite-memory":
        return await SqliteLedger.open(":memory:", defaults=defaults, clock=clock)
    if kind == "sqlite-file":
        return await SqliteLedger.open(tmp_path / "ledger.db", defaults=defaults, clock=clock)
    raise ValueError(kind)


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

"""Helpers shared by the ledger tests: ledger factories and the requests they take (the clock
is ``tests.fakes.clock.FakeClock``; a ledger reads ``clock.utc``).

The contract suite asks ``open_ledger(kind, ...)`` for a ledger; a new implementation (e.g.
PostgreSQL) joins the suite by adding its kind to ``LEDGER_KINDS``.
"""

from __future__ import annotations

from pathlib import Path

from bot.models import GenerationRequest, Limits, Requester
from bot.store.ledger import SqliteLedger
from tests.fakes.clock import FakeClock

__all__ = ["LEDGER_KINDS", "open_ledger", "request", "requester"]

LEDGER_KINDS = ("sqlite-memory", "sqlite-file")


async def open_ledger(
    kind: str,
    tmp_path: Path,
    *,
    defaults: Limits | None = None,
    clock: FakeClock | None = None,
) -> SqliteLedger:
    utc = None if clock is None else clock.utc
    if kind == "sqlite-memory":
        return await SqliteLedger.open(":memory:", defaults=defaults, clock=utc)
    if kind == "sqlite-file":
        return await SqliteLedger.open(tmp_path / "ledger.db", defaults=defaults, clock=utc)
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

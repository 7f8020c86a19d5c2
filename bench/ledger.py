"""Ledger throughput: hold+charge pairs per second with 1, 10 and 100 concurrent tasks.

Runs ``SqliteLedger`` on one file database (WAL, as in production, with every limit set and a
server spend cap so each hold really checks four limits), and a plain in-memory counter with
the same async interface as the baseline, in the same run. Usage::

    python bench/ledger.py [--pairs N] [--users N]

Prints a table; the ratio is ledger throughput / baseline throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.errors import QuotaExceededError
from bot.models import GenerationRequest, Hold, Limits, Requester
from bot.store.ledger import SqliteLedger

REQUEST = GenerationRequest(prompt="a red fox in snow", model="stability/sdxl", size="1024x1024")
COST = 2_000
BIG = 10**12


class PairTarget(Protocol):
    async def hold(
        self,
        *,
        requester: Requester,
        request: GenerationRequest,
        cost_micros: int,
        event_id: str | None = None,
    ) -> Hold: ...

    async def charge(self, job_id: str, *, images: int, cost_micros: int) -> None: ...


class MemoryCounter:
    """The baseline: the same checks against dict counters, no storage at all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used: defaultdict[str, int] = defaultdict(int)
        self.jobs: dict[str, tuple[str, int]] = {}

    async def hold(
        self,
        *,
        requester: Requester,
        request: GenerationRequest,
        cost_micros: int,
        event_id: str | None = None,
    ) -> Hold:
        key = requester.user_id
        if self.used[key] + request.n > self.limit:
            raise QuotaExceededError(
                limit="images_per_day",
                allowed=self.limit,
                used=self.used[key],
                requested=request.n,
                resets_at=None,  # type: ignore[arg-type]
            )
        self.used[key] += request.n
        job_id = uuid.uuid4().hex
        self.jobs[job_id] = (key, request.n)
        return Hold(job_id)

    async def charge(self, job_id: str, *, images: int, cost_micros: int) -> None:
        key, held = self.jobs.pop(job_id)
        self.used[key] -= held - images


async def run_pairs(
    target: PairTarget, *, tasks: int, pairs: int, users: int, servers: int = 1
) -> float:
    """Seconds taken for ``pairs`` hold+charge pairs spread over ``tasks`` tasks (task ``i``
    is user ``i % users`` of server ``G{1 + user % servers}``)."""
    per_task = pairs // tasks

    async def worker(index: int) -> None:
        user = index % users
        requester = Requester(
            platform="discord",
            workspace_id=f"G{1 + user % servers}",
            channel_id="C1",
            user_id=f"U{user}",
        )
        for _ in range(per_task):
            # Real holds carry the platform's event id (it is what makes them idempotent).
            hold = await target.hold(
                requester=requester,
                request=REQUEST,
                cost_micros=COST,
                event_id=uuid.uuid4().hex,
            )
            await target.charge(hold.job_id, images=1, cost_micros=COST)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    return time.perf_counter() - started


async def main(pairs: int, users: int, levels: tuple[int, ...]) -> None:
    limits = Limits(images_per_day=BIG, images_per_month=BIG, usd_micros_per_month=BIG)
    results: list[tuple[int, int, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        path = os.path.join(tmp, "bench.db")
        ledger = await SqliteLedger.open(path, defaults=limits)
        try:
            await ledger.set_spend_cap(
                platform="discord", workspace_id="G1", usd_micros=BIG, actor="bench"
            )
            await run_pairs(ledger, tasks=10, pairs=500, users=users)  # warm-up
            for tasks in levels:
                n = pairs - pairs % tasks
                ledger_s = await run_pairs(ledger, tasks=tasks, pairs=n, users=users)
                base_s = await run_pairs(MemoryCounter(BIG), tasks=tasks, pairs=n, users=users)
                results.append((tasks, n, n / ledger_s, n / base_s))
        finally:
            await ledger.close()
    print(
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPU(s), {users} users, file database in WAL mode"
    )
    header = ("tasks", "pairs", "ledger pairs/s", "baseline pairs/s", "ledger/baseline")
    rows = [header] + [
        (str(t), str(n), f"{lps:,.0f}", f"{bps:,.0f}", f"{lps / bps:.3f}")
        for t, n, lps, bps in results
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000, help="pairs per level")
    parser.add_argument("--users", type=int, default=20, help="distinct users")
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 10, 100])
    return parser.parse_args()


if __name__ == "__main__":
    args = _parse()
    asyncio.run(main(args.pairs, args.users, tuple(args.tasks)))

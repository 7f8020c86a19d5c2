"""Claim latency: how long one ``PostgresQueue.claim`` takes with 100, 1,000 and 10,000 jobs
waiting.

The queue is filled through the real ``admit`` (``--users`` users in ``--servers`` servers,
round-robin), with the cluster's cap at 1. Then ``--claims`` times: one ``claim`` (which
starts one job, in the fair order: the server, then the user, served least recently, the
oldest job), timed; then, untimed, the job is released (its slot freed) and a new one is
admitted, so that the depth stays the same. After the claims, ``EXPLAIN ANALYZE`` of the
claim's own ``SELECT`` at that depth says whether it sorts every waiting job. Usage::

    python bench/claim.py [--url ADMIN_URL] [--depths 100 1000 10000] [--claims 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _postgres
from bench._support import machine, percentile, table
from bot.models import Requester
from bot.store.database import open_store
from bot.store.lease import LEASE, renewing
from bot.store.postgres.queue import CLAIM_NEXT, PostgresQueue
from bot.store.row import stamp


@dataclass(frozen=True, slots=True)
class Depth:
    depth: int
    seconds: list[float]  # one claim each
    plan: str  # the top of the claim's plan: how many rows the sort saw, and its time

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p95_ms(self) -> float:
        return percentile(self.seconds, 95) * 1000


def _requester(index: int, users: int, servers: int) -> Requester:
    user = index % users
    return Requester(
        platform="discord", workspace_id=f"G{user % servers}", channel_id="C1", user_id=f"U{user}"
    )


async def _explain(queue: PostgresQueue, pool: Any, now_stamp: str) -> str:
    """The claim's ``SELECT`` under ``EXPLAIN (ANALYZE, FORMAT JSON)``: its top nodes, the
    rows each saw, and the execution time."""
    sql = CLAIM_NEXT
    async with pool.acquire() as conn, conn.transaction():
        raw = await conn.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", now_stamp, [], timeout=60
        )
    found = json.loads(raw)[0]
    nodes = []
    node = found["Plan"]
    while node is not None and len(nodes) < 4:
        nodes.append(f"{node['Node Type']} ({node.get('Actual Rows', '?')} rows)")
        if node["Node Type"] == "Sort":
            nodes[-1] += f" of {node['Plans'][0].get('Actual Rows', '?')}"
        children = node.get("Plans") or []
        node = children[0] if children else None
    return f"{' > '.join(nodes)}; {found['Execution Time']:.2f} ms"


async def one_depth(url: str, *, depth: int, claims: int, users: int, servers: int) -> Depth:
    """``url``: an empty PostgreSQL database."""
    store = await open_store(url)
    # Filling 10,000 jobs outlasts the lease: without renewing it the jobs' acceptor would
    # look dead and no claim would start them.
    renewal = renewing(store.ledger.renew_lease, LEASE.total_seconds() / 3)
    await renewal.__aenter__()
    try:
        queue = store.queue
        assert queue is not None
        pool = queue._pool
        await queue.configure(1)
        limit = depth + claims + 1

        async def admit(index: int) -> None:
            now = store.ledger.now()
            found, _ = await queue.admit(
                uuid.uuid4().hex,
                _requester(index, users, servers),
                max_per_user=limit,
                max_queue=limit,
                now_stamp=stamp(now),
                now=now.timestamp(),
            )
            assert found == "admitted", found

        # One slot busy first, so that the filling admissions only queue.
        await admit(0)
        for index in range(1, depth + 1):
            await admit(index)
        busy = await pool.fetchval("SELECT job_id FROM queue WHERE state = 'running'")
        if busy is not None:
            await queue.release(busy)
        times: list[float] = []
        for index in range(claims):
            now = store.ledger.now()
            started = time.perf_counter()
            started_jobs, _ = await queue.claim(
                now_stamp=stamp(now), now=now.timestamp(), adoptable=()
            )
            times.append(time.perf_counter() - started)
            assert len(started_jobs) == 1, started_jobs
            await queue.release(started_jobs[0].job_id)
            await admit(depth + 1 + index)
        plan = await _explain(queue, pool, stamp(store.ledger.now()))
    finally:
        await renewal.__aexit__(None, None, None)
        await store.close()
    return Depth(depth, times, plan)


async def measure(
    admin: str,
    *,
    depths: tuple[int, ...] = (100, 1_000, 10_000),
    claims: int = 200,
    users: int = 400,
    servers: int = 10,
) -> list[Depth]:
    """``admin``: a server's admin URL (each depth gets a database of its own)."""
    out = []
    for depth in depths:
        async with _postgres.database(admin, "bench_claim") as url:
            out.append(
                await one_depth(url, depth=depth, claims=claims, users=users, servers=servers)
            )
    return out


def report(results: list[Depth], *, server: str, users: int, servers: int) -> str:
    rows = [
        (
            f"{r.depth:,}",
            str(len(r.seconds)),
            f"{r.median_ms:.2f}",
            f"{r.p95_ms:.2f}",
            r.plan,
        )
        for r in results
    ]
    header = ("queued", "claims", "median ms", "p95 ms", "claim's SELECT (EXPLAIN ANALYZE)")
    return (
        f"{machine()}\n{server}\none claim = one job started (cap 1, the slot freed between "
        f"claims); {users} users in {servers} servers\n" + table(header, rows)
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=None, help="a PostgreSQL admin URL (see bench/_postgres)")
    parser.add_argument("--depths", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--servers", type=int, default=10)
    return parser.parse_args()


async def _main(args: argparse.Namespace) -> None:
    async with _postgres.server(args.url) as admin:
        async with _postgres.database(admin) as probe:
            server = await _postgres.describe(probe)
        results = await measure(
            admin,
            depths=tuple(args.depths),
            claims=args.claims,
            users=args.users,
            servers=args.servers,
        )
    print(report(results, server=server, users=args.users, servers=args.servers))


if __name__ == "__main__":
    asyncio.run(_main(_parse()))

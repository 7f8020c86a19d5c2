"""Ledger throughput on PostgreSQL beside SQLite: hold+charge pairs per second, one run.

The same work as ``bench/ledger.py`` (``hold`` with an event id against all four limits and
a server spend cap, then ``charge`` for one image, 20 users of one server), on
``PostgresLedger`` (asyncpg, the production pool of 10 connections) and ``SqliteLedger`` (one
file in WAL mode), one after the other at each level of concurrent tasks, and the in-memory
counter of ``bench/ledger.py`` as the baseline. Then ``--processes`` OS processes at once on
one database (each with its own store, as bot processes have, and ``--process-tasks`` tasks),
on PostgreSQL and on the SQLite file. Usage::

    python bench/postgres_ledger.py [--url ADMIN_URL] [--pairs N] [--tasks 1 10 100]
        [--processes 4] [--process-tasks 10]

Each row's ratio is its pairs/s over the SQLite pairs/s at the same level.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _postgres
from bench._support import REPO_ROOT, machine, table
from bench.ledger import BIG, MemoryCounter, PairTarget, run_pairs
from bot.models import Limits
from bot.store.ledger import Ledger, SqliteLedger
from bot.store.postgres.ledger import PostgresLedger

LIMITS = Limits(images_per_day=BIG, images_per_month=BIG, usd_micros_per_month=BIG)
WARM_UP = 200


@dataclass(frozen=True, slots=True)
class Level:
    store: str  # "PostgreSQL", "SQLite file" or "in-memory counter"
    tasks: int  # per process
    processes: int
    pairs: int  # in all
    seconds: float

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds


@contextlib.asynccontextmanager
async def _ledger(store: str, target: str) -> AsyncIterator[Ledger]:
    ledger: Ledger
    if store == "PostgreSQL":
        ledger = await PostgresLedger.open(target, defaults=LIMITS)
    else:
        ledger = await SqliteLedger.open(target, defaults=LIMITS)
    try:
        yield ledger
    finally:
        await ledger.close()


async def _prepare(store: str, target: str, users: int, servers: int) -> None:
    async with _ledger(store, target) as ledger:
        for server in range(servers):
            await ledger.set_spend_cap(
                platform="discord", workspace_id=f"G{1 + server}", usd_micros=BIG, actor="bench"
            )
        await run_pairs(ledger, tasks=10, pairs=WARM_UP, users=users, servers=servers)


async def _in_process(
    store: str, target: str, *, tasks: int, pairs: int, users: int, servers: int
) -> Level:
    if store == "in-memory counter":
        counter: PairTarget = MemoryCounter(BIG)
        seconds = await run_pairs(counter, tasks=tasks, pairs=pairs, users=users)
        return Level(store, tasks, 1, pairs, seconds)
    async with _ledger(store, target) as ledger:
        seconds = await run_pairs(ledger, tasks=tasks, pairs=pairs, users=users, servers=servers)
    return Level(store, tasks, 1, pairs, seconds)


async def _in_processes(
    store: str,
    target: str,
    *,
    processes: int,
    tasks: int,
    pairs: int,
    users: int,
    servers: int,
) -> Level:
    """``processes`` children, each opening its own store and doing ``pairs // processes``
    pairs once every one of them is ready; timed from the first start to the last end."""
    per_process = pairs // processes
    spec = json.dumps(
        {
            "store": store,
            "target": target,
            "tasks": tasks,
            "pairs": per_process,
            "users": users,
            "servers": servers,
        }
    )
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.postgres_ledger",
            "--child",
            spec,
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            ready = await asyncio.wait_for(child.stdout.readline(), 60)
            if ready.strip() != b"ready":
                raise RuntimeError(f"a ledger child did not start: {ready!r}")
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
        spans = []
        for child in children:
            out, _ = await asyncio.wait_for(child.communicate(), 600)
            spans.append(json.loads(out))
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    return Level(store, tasks, processes, per_process * processes, seconds)


async def _child(spec: dict[str, object]) -> None:
    store, target = str(spec["store"]), str(spec["target"])
    async with _ledger(store, target) as ledger:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        started = time.time()
        await run_pairs(
            ledger,
            tasks=int(str(spec["tasks"])),
            pairs=int(str(spec["pairs"])),
            users=int(str(spec["users"])),
            servers=int(str(spec["servers"])),
        )
        ended = time.time()
    print(json.dumps([started, ended]), flush=True)


async def measure(
    url: str,
    *,
    pairs: int = 20_000,
    users: int = 20,
    servers: int = 1,
    levels: tuple[int, ...] = (1, 10, 100),
    processes: int = 4,
    process_tasks: int = 10,
) -> list[Level]:
    """``url``: an empty PostgreSQL database. Rows: per level SQLite, PostgreSQL and the
    baseline; then the processes, SQLite and PostgreSQL."""
    results: list[Level] = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        sqlite_file = os.path.join(tmp, "bench.db")
        targets = {"SQLite file": sqlite_file, "PostgreSQL": url, "in-memory counter": ""}
        for store in ("SQLite file", "PostgreSQL"):
            await _prepare(store, targets[store], users, servers)
        for tasks in levels:
            n = pairs - pairs % tasks
            for store, target in targets.items():
                results.append(
                    await _in_process(
                        store, target, tasks=tasks, pairs=n, users=users, servers=servers
                    )
                )
        if processes > 1:
            for store in ("SQLite file", "PostgreSQL"):
                results.append(
                    await _in_processes(
                        store,
                        targets[store],
                        processes=processes,
                        tasks=process_tasks,
                        pairs=pairs,
                        users=users,
                        servers=servers,
                    )
                )
    return results


def report(results: list[Level], *, server: str, users: int, servers: int = 1) -> str:
    sqlite_rate = {(r.tasks, r.processes): r.rate for r in results if r.store == "SQLite file"}
    rows = []
    for r in results:
        base = sqlite_rate.get((r.tasks, r.processes))
        rows.append(
            (
                str(r.processes),
                str(r.tasks),
                r.store,
                f"{r.pairs:,}",
                f"{r.rate:,.0f}",
                "-" if base is None else f"{r.rate / base:.2f}",
            )
        )
    header = ("processes", "tasks each", "store", "pairs", "pairs/s", "/ SQLite")
    return (
        f"{machine()}\n{server}; SQLite {sqlite3.sqlite_version} (one file, WAL, "
        f"synchronous=NORMAL); {users} users of {servers} server(s)\n" + table(header, rows)
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=None, help="a PostgreSQL admin URL (see bench/_postgres)")
    parser.add_argument("--pairs", type=int, default=20_000, help="pairs per level")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--servers", type=int, default=1, help="users spread over N servers")
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--process-tasks", type=int, default=10)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


async def _main(args: argparse.Namespace) -> None:
    async with _postgres.server(args.url) as admin, _postgres.database(admin) as url:
        server = await _postgres.describe(url)
        results = await measure(
            url,
            pairs=args.pairs,
            users=args.users,
            servers=args.servers,
            levels=tuple(args.tasks),
            processes=args.processes,
            process_tasks=args.process_tasks,
        )
    print(report(results, server=server, users=args.users, servers=args.servers))


if __name__ == "__main__":
    arguments = _parse()
    if arguments.child is not None:
        asyncio.run(_child(json.loads(arguments.child)))
    else:
        asyncio.run(_main(arguments))

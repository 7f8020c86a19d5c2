"""Four processes racing holds, charges and refunds on one PostgreSQL database never overspend,
lose or duplicate a job, or let the usage counters drift from the jobs.

Each worker is a child process with its own store (``open_store``, as a bot process opens it)
running its share of 1,000 operations drawn from a seeded plan, several at a time. Limits are
tight (per-user images/day and USD/month, and the server's spend cap), so most operations meet
a full limit while others free room by refunds. "Never above a limit" is checked at every
write, not only at the end: before the workers start, the test adds CHECK constraints to the
counters (which the triggers keep in step inside each hold's own statement), so a hold that
overshot would fail in the worker. At the end the rows are checked against what the workers
report. A failure names the seed; ``IMAGINE_RACE_SEED=<seed>`` replays the same plan.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.errors import QuotaExceededError
from bot.models import Limits
from bot.store.database import open_store
from tests.fakes import postgres
from tests.fakes.process import REPO_ROOT
from tests.ledger_support import request, requester

pytestmark = pytest.mark.e2e

WORKERS = 4
OPERATIONS = 1_000
AT_ONCE = 8  # operations in flight per worker
USERS = 4
EVENTS = 40  # event ids shared by all workers: redeliveries of one platform event
PRICE = 2_000  # micro-dollars per image
LIMITS = Limits(images_per_day=40, usd_micros_per_month=60_000)
SERVER_CAP = 150_000
NOW = datetime(2026, 6, 16, 9, 30, tzinfo=UTC)
SEED = int(os.environ.get("IMAGINE_RACE_SEED") or 20260616)


def _plan(rng: random.Random, worker: int, index: int) -> dict[str, Any]:
    """One operation: who holds what, under which event id, and how it is settled."""
    if rng.random() < 0.25:
        # A redelivered event is the same request every time, whichever process gets it.
        event = rng.randrange(EVENTS)
        user, n, paid, event_id = event % USERS, 1 + event % 3, event % 5 != 0, f"ev-{event}"
    else:
        user, n, paid = rng.randrange(USERS), rng.randint(1, 3), rng.random() < 0.8
        event_id = f"w{worker}-{index}" if rng.random() < 0.7 else None
    settle = rng.choice(("charge", "charge", "refund", "refund", "keep"))
    delivered = rng.randint(0, n)
    return {
        "user": f"u{user}",
        "n": n,
        "cost": n * PRICE if paid else 0,
        "event_id": event_id,
        "settle": settle,
        "images": delivered,
        "charged": delivered * PRICE if paid else 0,
    }


async def _work(url: str, seed: int, worker: int, operations: int) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}:{worker}")
    plan = [_plan(rng, worker, i) for i in range(operations)]
    store = await open_store(url, defaults=LIMITS, clock=lambda: NOW)
    ledger = store.ledger
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # every worker starts at the parent's word
    gate = asyncio.Semaphore(AT_ONCE)

    async def run(op: dict[str, Any]) -> dict[str, Any]:
        async with gate:
            try:
                hold = await ledger.hold(
                    requester=requester(op["user"]),
                    request=request(op["n"]),
                    cost_micros=op["cost"],
                    event_id=op["event_id"],
                )
            except QuotaExceededError as refused:
                return {**op, "refused": str(refused.limit)}
            except Exception as exc:
                return {**op, "error": repr(exc)}
            outcome = {**op, "job_id": hold.job_id, "duplicate": hold.duplicate}
            if hold.duplicate:
                return outcome  # the process that made the job settles it
            try:
                if op["settle"] == "charge":
                    await ledger.charge(hold.job_id, images=op["images"], cost_micros=op["charged"])
                elif op["settle"] == "refund":
                    await ledger.refund(hold.job_id, reason="race")
            except Exception as exc:
                return {**outcome, "error": repr(exc)}
            return outcome

    try:
        return await asyncio.gather(*(run(op) for op in plan))
    finally:
        await store.close()


def worker_main() -> None:
    """``python -c 'from tests.test_postgres_race import worker_main; worker_main()' URL SEED
    WORKER OPERATIONS``: prints ``ready``, waits for a line, then prints its outcomes."""
    url, seed, worker, operations = sys.argv[1], *map(int, sys.argv[2:5])
    print(json.dumps(asyncio.run(_work(url, seed, worker, operations))), flush=True)


async def _race(url: str) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    code = "from tests.test_postgres_race import worker_main; worker_main()"
    share = OPERATIONS // WORKERS
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            url,
            str(SEED),
            str(worker),
            str(share),
            cwd=REPO_ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for worker in range(WORKERS)
    ]
    for child in children:
        assert child.stdout is not None
        ready = await asyncio.wait_for(child.stdout.readline(), 60)
        if ready != b"ready\n":
            _, err = await child.communicate()
            raise AssertionError(f"seed {SEED}: a worker did not start: {err.decode()}")
    finished = await asyncio.wait_for(
        asyncio.gather(*(child.communicate(b"go\n") for child in children)), 300
    )
    outcomes: list[dict[str, Any]] = []
    for child, (out, err) in zip(children, finished, strict=True):
        assert child.returncode == 0, f"seed {SEED}: a worker failed: {err.decode()}"
        outcomes.extend(json.loads(out))
    return outcomes


def _used(row: asyncpg.Record) -> tuple[int, int]:
    """What a job counts against its limits: held, charged, or nothing once refunded."""
    if row["state"] == "held":
        return row["held_images"], row["held_micros"]
    if row["state"] == "charged":
        return row["charged_images"], row["charged_micros"]
    return 0, 0


async def test_four_processes_racing_never_overspend_lose_or_duplicate_a_job(
    tmp_path: Path,
) -> None:
    url = postgres.database_url(str(tmp_path))
    async with await open_store(url, defaults=LIMITS, clock=lambda: NOW) as store:
        await store.ledger.set_spend_cap(
            platform="discord", workspace_id="G1", usd_micros=SERVER_CAP, actor="t"
        )
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            f"""
            ALTER TABLE usage_counters ADD CONSTRAINT race_day
                CHECK (period NOT LIKE 'D%' OR images <= {LIMITS.images_per_day});
            ALTER TABLE usage_counters ADD CONSTRAINT race_month
                CHECK (period NOT LIKE 'M%' OR micros <= {LIMITS.usd_micros_per_month});
            ALTER TABLE workspace_counters ADD CONSTRAINT race_cap
                CHECK (micros <= {SERVER_CAP});
            """
        )
        outcomes = await _race(url)
        jobs = await connection.fetch("SELECT * FROM jobs")
        counters = await connection.fetch("SELECT * FROM usage_counters")
        workspace = await connection.fetch("SELECT * FROM workspace_counters")
    finally:
        await connection.close()
    seed = f"seed {SEED} (IMAGINE_RACE_SEED={SEED} replays it)"

    errors = [o for o in outcomes if "error" in o]
    assert not errors, f"{seed}: {len(errors)} operation(s) failed, e.g. {errors[:3]}"
    assert len(outcomes) == OPERATIONS
    refused = Counter(o["refused"] for o in outcomes if "refused" in o)
    made = [o for o in outcomes if "job_id" in o and not o["duplicate"]]
    assert made and refused, f"{seed}: the limits were not tight ({refused}, {len(made)} jobs)"
    assert set(refused) <= {"images_per_day", "usd_micros_per_month", "server_usd_micros_per_month"}

    # Every hold a worker made is exactly one row, and every row is a hold a worker made.
    by_id = {row["job_id"]: row for row in jobs}
    assert len(by_id) == len(jobs)
    assert Counter(o["job_id"] for o in made) == Counter(list(by_id)), f"{seed}: rows lost or extra"
    # A repeated event id made one job, and every delivery of it was told that job.
    events: defaultdict[str, set[str]] = defaultdict(set)
    for o in outcomes:
        if "job_id" in o and o["event_id"] is not None:
            events[o["event_id"]].add(o["job_id"])
    for event_id, job_ids in events.items():
        assert len(job_ids) == 1, f"{seed}: event {event_id} made jobs {job_ids}"
        assert by_id[next(iter(job_ids))]["event_id"] == event_id
    first_deliveries = Counter(o["event_id"] for o in made if o["event_id"] is not None)
    assert set(first_deliveries.values()) <= {1}, f"{seed}: an event was held twice"
    # Each job ended as its worker settled it.
    for o in made:
        row = by_id[o["job_id"]]
        expected = {"charge": "charged", "refund": "refunded", "keep": "held"}[o["settle"]]
        assert row["state"] == expected, f"{seed}: job {o['job_id']} is {row['state']}"
        if expected == "charged":
            assert (row["charged_images"], row["charged_micros"]) == (o["images"], o["charged"])

    # No window's held + charged usage is above its limit.
    day: Counter[tuple[str, str]] = Counter()
    day_micros: Counter[tuple[str, str]] = Counter()
    month: Counter[tuple[str, str]] = Counter()
    month_images: Counter[tuple[str, str]] = Counter()
    server: Counter[str] = Counter()
    for row in jobs:
        images, micros = _used(row)
        day[row["user_id"], row["day"]] += images
        day_micros[row["user_id"], row["day"]] += micros
        month_images[row["user_id"], row["month"]] += images
        month[row["user_id"], row["month"]] += micros
        server[row["month"]] += micros
    assert max(day.values()) <= LIMITS.images_per_day, f"{seed}: {day}"
    assert max(month.values()) <= LIMITS.usd_micros_per_month, f"{seed}: {month}"
    assert max(server.values()) <= SERVER_CAP, f"{seed}: {server}"

    # The counters every hold reads are the sums over the jobs.
    expected_counters = {
        **{(user, f"D{d}"): (images, day_micros[user, d]) for (user, d), images in day.items()},
        **{(user, f"M{m}"): (month_images[user, m], micros) for (user, m), micros in month.items()},
    }
    found = {(c["user_id"], c["period"]): (c["images"], c["micros"]) for c in counters}
    for key, (images, micros) in expected_counters.items():
        have = found.pop(key, (0, 0))
        assert have == (images, micros), f"{seed}: {key} counted {have}, jobs say {images, micros}"
    assert all(value == (0, 0) for value in found.values()), f"{seed}: stray counters {found}"
    (only,) = workspace
    assert (only["period"], only["micros"]) == (f"M{NOW:%Y-%m}", server[f"{NOW:%Y-%m}"])
    assert only["images"] == sum(month_images.values())

"""Cluster throughput: N jobs at a cluster-wide cap of C, spread over 1, 2 and 4 OS processes.

Each process opens its own store on one PostgreSQL database (its own boot, as a bot process
has) and runs a ``ClusterScheduler`` with ``max_concurrent=C`` and the production poll. Job
``i`` goes to process ``i % P``, to user ``i % users`` of server ``user % servers``; each job
is what the service does to the database around a provider call: ``hold`` (with an event id,
done before the start), then ``admit``, ``call`` of a fake provider that sleeps ``--latency``
seconds, ``charge``, leave the queue. Every process admits its jobs at once when all are
ready.

Wall time runs from the first admission to the last charge, against the ideal
``ceil(N / C) x latency``. The peak concurrency is counted from the provider calls' own
start and end times in every process (one machine, one clock). "slot idle per job" is the
time a slot stood free between one job's call ending and the next one's starting:
``(C x wall - sum of call times) / N``. The baseline, in the same run: the same sleeps under
``asyncio.Semaphore(C)`` in this process, no database. Usage::

    python bench/cluster.py [--url ADMIN_URL] [--jobs 400] [--cap 16] [--latency 0.5]
        [--processes 1 2 4] [--users 40] [--servers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _postgres
from bench._support import REPO_ROOT, machine, table
from bot.cluster import ClusterScheduler
from bot.models import GenerationRequest, Limits, Requester
from bot.store.database import open_store
from bot.store.lease import LEASE, renewing

TARGET_RATIO = 1.05
BIG = 10**12
COST = 2_000
REQUEST = GenerationRequest(prompt="a lighthouse at dusk", model="stability/sdxl", size="1024x1024")


@dataclass(frozen=True, slots=True)
class Job:
    admitted: float  # Unix seconds: in the queue
    started: float  # its provider call began
    ended: float  # its provider call returned
    done: float  # charged


@dataclass(frozen=True, slots=True)
class Run:
    label: str  # "1 process", "baseline"...
    processes: int
    cap: int
    latency: float
    jobs: list[Job]

    @property
    def ideal_s(self) -> float:
        return math.ceil(len(self.jobs) / self.cap) * self.latency

    @property
    def wall_s(self) -> float:
        return max(j.done for j in self.jobs) - min(j.admitted for j in self.jobs)

    @property
    def ratio(self) -> float:
        return self.wall_s / self.ideal_s

    @property
    def admitting_s(self) -> float:
        return max(j.admitted for j in self.jobs) - min(j.admitted for j in self.jobs)

    @property
    def filling_s(self) -> float:
        """From the first admission until the cap's worth of calls had started."""
        starts = sorted(j.started for j in self.jobs)
        return starts[min(self.cap, len(starts)) - 1] - min(j.admitted for j in self.jobs)

    @property
    def last_charge_s(self) -> float:
        """From the last provider call's end to the last charge."""
        return max(j.done for j in self.jobs) - max(j.ended for j in self.jobs)

    @property
    def peak(self) -> int:
        # Sorted (time, +1 start / -1 end): an end and a start at the same instant count the
        # end first, since a slot freed is what lets the next call start.
        events = sorted([(j.started, 1) for j in self.jobs] + [(j.ended, -1) for j in self.jobs])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        return peak

    @property
    def idle_per_job_ms(self) -> float:
        busy = sum(j.ended - j.started for j in self.jobs)
        first = min(j.started for j in self.jobs)
        last = max(j.ended for j in self.jobs)
        return (self.cap * (last - first) - busy) / len(self.jobs) * 1000


def requester_of(index: int, *, users: int, servers: int) -> Requester:
    user = index % users
    return Requester(
        platform="discord",
        workspace_id=f"G{user % servers}",
        channel_id="C1",
        user_id=f"U{user:03d}",
    )


async def _child(spec: dict[str, Any]) -> None:
    """One process: its share of the jobs, once the parent says go; prints their times."""
    url, latency = str(spec["url"]), float(spec["latency"])
    limits = Limits(images_per_day=BIG, images_per_month=BIG, usd_micros_per_month=BIG)
    store = await open_store(url, defaults=limits)
    ledger, queue = store.ledger, store.queue
    assert queue is not None
    scheduler = ClusterScheduler(
        queue,
        dsn=url,
        now=ledger.now,
        max_concurrent=int(spec["cap"]),
        max_per_user=int(spec["max_per_user"]),
        max_queue=int(spec["max_queue"]),
    )
    await scheduler.start()

    async def provider() -> None:
        await asyncio.sleep(latency)

    async def held(index: int) -> tuple[str, Requester]:
        who = requester_of(index, users=int(spec["users"]), servers=int(spec["servers"]))
        hold = await ledger.hold(
            requester=who, request=REQUEST, cost_micros=COST, event_id=uuid.uuid4().hex
        )
        return hold.job_id, who

    async def one(job_id: str, who: Requester) -> Job:
        async with scheduler.admit(job_id, who) as ticket:
            admitted = time.time()
            times: list[float] = []

            async def call() -> None:
                times.append(time.time())
                await provider()
                times.append(time.time())

            await ticket.call(call)
            await ledger.charge(job_id, images=1, cost_micros=COST)
            done = time.time()
        return Job(admitted, times[0], times[1], done)

    try:
        # As in the runtime: without it the others take this process's running jobs over
        # once its lease runs out, and nobody here adopts them.
        async with renewing(ledger.renew_lease, LEASE.total_seconds() / 3):
            # Held before the start: 400 holds at once would queue every admission behind
            # them in the pool, which is the ledger's figure (bench/postgres_ledger.py).
            holds = [await held(i) for i in spec["indices"]]
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            jobs = await asyncio.gather(*(one(job_id, who) for job_id, who in holds))
    finally:
        await scheduler.close(0)
        await store.close()
    print(json.dumps([[j.admitted, j.started, j.ended, j.done] for j in jobs]), flush=True)


async def in_processes(
    url: str,
    *,
    processes: int,
    jobs: int,
    cap: int,
    latency: float,
    users: int,
    servers: int,
) -> Run:
    """``jobs`` jobs over ``processes`` child processes on the database ``url``."""
    base = {
        "url": url,
        "latency": latency,
        "cap": cap,
        "users": users,
        "servers": servers,
        "max_per_user": math.ceil(jobs / users),
        "max_queue": jobs,
    }
    children = []
    try:
        for p in range(processes):
            spec = {**base, "indices": list(range(p, jobs, processes))}
            children.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.cluster",
                    "--child",
                    json.dumps(spec),
                    cwd=REPO_ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for child in children:
            assert child.stdout is not None
            ready = await asyncio.wait_for(child.stdout.readline(), 60)
            if ready.strip() != b"ready":
                raise RuntimeError(f"a cluster child did not start: {ready!r}")
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
        found: list[Job] = []
        for child in children:
            # A stuck run fails instead of hanging (a job nobody may claim, say).
            budget = 60 + 4 * math.ceil(jobs / cap) * latency
            out, _ = await asyncio.wait_for(child.communicate(), budget)
            if child.returncode != 0:
                raise RuntimeError(f"a cluster child failed (exit {child.returncode})")
            found.extend(Job(*times) for times in json.loads(out))
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    label = f"{processes} process{'es' if processes > 1 else ''}"
    return Run(label, processes, cap, latency, found)


async def baseline(*, jobs: int, cap: int, latency: float) -> Run:
    """The same calls under a plain semaphore in this process: what no database costs."""
    gate = asyncio.Semaphore(cap)

    async def one() -> Job:
        admitted = time.time()
        async with gate:
            started = time.time()
            await asyncio.sleep(latency)
            ended = time.time()
        return Job(admitted, started, ended, time.time())

    return Run(
        "baseline", 1, cap, latency, list(await asyncio.gather(*(one() for _ in range(jobs))))
    )


async def measure(
    url: str,
    *,
    jobs: int = 400,
    cap: int = 16,
    latency: float = 0.5,
    processes: tuple[int, ...] = (1, 2, 4),
    users: int = 40,
    servers: int = 4,
) -> list[Run]:
    """``url``: an empty PostgreSQL database (each run leaves the queue empty)."""
    runs = [await baseline(jobs=jobs, cap=cap, latency=latency)]
    for count in processes:
        runs.append(
            await in_processes(
                url,
                processes=count,
                jobs=jobs,
                cap=cap,
                latency=latency,
                users=users,
                servers=servers,
            )
        )
    return runs


def report(runs: list[Run], *, server: str, users: int, servers: int) -> str:
    rows = [
        (
            r.label,
            str(len(r.jobs)),
            str(r.cap),
            f"{r.ideal_s:.2f}",
            f"{r.wall_s:.2f}",
            f"{r.ratio:.3f}",
            str(r.peak),
            f"{r.idle_per_job_ms:.1f}",
            f"{r.admitting_s:.2f}",
            f"{r.filling_s:.3f}",
            f"{r.last_charge_s:.3f}",
            "yes" if r.ratio <= TARGET_RATIO else "NO",
        )
        for r in runs
    ]
    header = (
        "run",
        "jobs",
        "cap",
        "ideal s",
        "wall s",
        "wall/ideal",
        "peak",
        "slot idle/job ms",
        "admitting s",
        "filling s",
        "last charge s",
        "<= 1.05",
    )
    latency = runs[0].latency if runs else 0.0
    return (
        f"{machine()}\n{server}\nprovider latency {latency} s (a sleep); {users} users in "
        f"{servers} servers; baseline: asyncio.Semaphore(cap), no database\n" + table(header, rows)
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=None, help="a PostgreSQL admin URL (see bench/_postgres)")
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--cap", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


async def _main(args: argparse.Namespace) -> None:
    async with _postgres.server(args.url) as admin, _postgres.database(admin) as url:
        server = await _postgres.describe(url)
        runs = await measure(
            url,
            jobs=args.jobs,
            cap=args.cap,
            latency=args.latency,
            processes=tuple(args.processes),
            users=args.users,
            servers=args.servers,
        )
    print(report(runs, server=server, users=args.users, servers=args.servers))


if __name__ == "__main__":
    arguments = _parse()
    if arguments.child is not None:
        asyncio.run(_child(json.loads(arguments.child)))
    else:
        asyncio.run(_main(arguments))

"""Fairness: how long a newcomer's single job waits with a 20-job burst queued ahead of it.

Through ``ImageService`` with the ``Scheduler`` (cap C = 4 by default) on the real provider
client and a file ledger, the fake provider answering after ``--latency`` seconds. Two bursts:

- ``1 user x 20``: one user submits 20 jobs at once; the per-user cap is raised to 20 for this
  run (``Scheduler(max_per_user=20)``), since the default of 2 would refuse the 3rd job;
- ``10 users x 2``: ten users submit two jobs each (the default per-user cap).

Once the whole burst is admitted (C running, the rest queued), a newcomer submits one job.
Its wait is the time from submitting to its provider call starting, in provider-latency units.

Baseline, in the same run: the same burst and newcomer through the same service without the
scheduler, with a first-come-first-served gate (``asyncio.Semaphore(C)``, whose waiters are
served in order) around the provider. The ideal figures (no overhead) are shown too: FIFO
puts the newcomer behind every queued job, floor(20 / C) rounds; round-robin starts it in the
first free slot (1 round) when one user bursts, and after the other users' first jobs
(ceil((10 - C + 1) / C) rounds) when ten users burst. Usage::

    python bench/fairness.py [--cap 4] [--burst 20] [--latency 1.0] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import Core, machine, open_core, requester, table
from bot.models import GeneratedImage, GenerationRequest, ModelSpec, QueueStatus
from bot.provider.client import ImageProvider
from bot.scheduler import Scheduler

NEWCOMER = "newcomer"


def _request(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, model="stability/sdxl", size="1024x1024")


class Recorder:
    """Wraps the provider: records when each job's call starts (after ``gate``, if any) and
    counts calls entered, so the benchmark knows when a FIFO burst is all waiting."""

    def __init__(self, inner: ImageProvider, gate: asyncio.Semaphore | None) -> None:
        self.inner = inner
        self.gate = gate
        self.started: dict[str, float] = {}
        self.entered = 0
        self.changed = asyncio.Event()

    @property
    def billable(self) -> bool:
        return self.inner.billable

    async def generate(
        self, request: GenerationRequest, spec: ModelSpec
    ) -> tuple[GeneratedImage, ...]:
        self.entered += 1
        self.changed.set()
        async with self.gate if self.gate is not None else contextlib.nullcontext():
            self.started[request.prompt] = time.perf_counter()
            return await self.inner.generate(request, spec)


@dataclass(frozen=True, slots=True)
class Wait:
    burst: str  # "1 user x 20" or "10 users x 2"
    order: str  # "round-robin" or "FIFO"
    wait_units: float  # newcomer: submit -> provider call started, in latencies
    done_units: float  # newcomer: submit -> result, in latencies
    ideal_units: float


def _ideal(order: str, burst: int, users: int, cap: int) -> float:
    if order == "FIFO":
        return float(burst // cap)
    if users == 1:
        return 1.0
    return float(math.ceil((users - cap + 1) / cap))


async def one_case(
    core: Core, *, order: str, users: int, burst: int, cap: int, latency: float
) -> Wait:
    fifo = order == "FIFO"
    recorder = Recorder(core.provider, asyncio.Semaphore(cap) if fifo else None)
    per_user = math.ceil(burst / users)
    scheduler = (
        None
        if fifo
        else Scheduler(max_concurrent=cap, max_per_user=max(2, per_user), max_queue=burst + 1)
    )
    service = core.service(scheduler=scheduler, provider=recorder, job_timeout=900.0)
    reported: set[str] = set()
    admitted = asyncio.Event()

    async def progress(status: QueueStatus) -> None:
        reported.add(status.job_id)
        if len(reported) >= burst:
            admitted.set()

    jobs = [
        asyncio.create_task(
            service.generate(
                _request(f"burst {i}"), requester(f"U{i % users:02d}"), progress=progress
            )
        )
        for i in range(burst)
    ]
    # Until the whole burst is admitted: C running and the rest queued (or, FIFO, waiting).
    while not (admitted.is_set() or recorder.entered >= burst):
        waiter = asyncio.ensure_future(admitted.wait())
        changed = asyncio.ensure_future(recorder.changed.wait())
        await asyncio.wait({waiter, changed}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        changed.cancel()
        recorder.changed.clear()
    submitted = time.perf_counter()
    await service.generate(_request(NEWCOMER), requester("NEWCOMER"))
    done = time.perf_counter()
    await asyncio.gather(*jobs)
    await service.shutdown(0.0)
    label = f"{users} user{'s' if users > 1 else ''} x {per_user}"
    return Wait(
        burst=label,
        order=order,
        wait_units=(recorder.started[NEWCOMER] - submitted) / latency,
        done_units=(done - submitted) / latency,
        ideal_units=_ideal(order, burst, users, cap),
    )


async def measure(
    *, cap: int = 4, burst: int = 20, latency: float = 1.0, runs: int = 1
) -> list[Wait]:
    waits: list[Wait] = []
    async with open_core(latency=latency) as core:
        await core.provider.generate(_request("warm-up"), core.catalog.get("stability/sdxl"))
        for _ in range(runs):
            for users in (1, 10):
                for order in ("round-robin", "FIFO"):
                    waits.append(
                        await one_case(
                            core,
                            order=order,
                            users=users,
                            burst=burst,
                            cap=cap,
                            latency=latency,
                        )
                    )
    return waits


def report(waits: list[Wait], *, cap: int, latency: float) -> str:
    rows = [
        (
            w.burst,
            w.order,
            f"{w.wait_units:.2f}",
            f"{w.ideal_units:.0f}",
            f"{w.done_units:.2f}",
        )
        for w in waits
    ]
    header = ("burst ahead", "order", "newcomer wait", "ideal", "newcomer done")
    return (
        f"{machine()}\ncap C = {cap}, provider latency {latency} s; waits in provider "
        "latencies (submit -> its provider call starts; done = its result back); "
        "baseline: FIFO\n" + table(header, rows)
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cap", type=int, default=4)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=1)
    return parser.parse_args()


if __name__ == "__main__":
    args = _parse()
    result = asyncio.run(
        measure(cap=args.cap, burst=args.burst, latency=args.latency, runs=args.runs)
    )
    print(report(result, cap=args.cap, latency=args.latency))

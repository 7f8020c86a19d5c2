"""Throughput: J jobs through ImageService and the scheduler with cap C, at 1 s provider
latency, against the ideal ceil(J / C) seconds.

The core is wired as ``imagine-bot run`` wires it (``bench/_support.open_core``): the real
``OpenAIImageClient`` on one pooled ``httpx`` client, a file ``SqliteLedger`` (WAL), and
``ImageService`` with a ``Scheduler(max_concurrent=C, max_per_user=2, max_queue=J)``. All J
jobs are submitted at once from J/2 users (two each, the default per-user cap); each job is a
1024x1024 image from the fake provider (in its own process), which answers after
``--latency`` seconds with a pre-encoded PNG: ``--image flat`` (default) is the fake's own
flat drawing (16 kB, cheap to decode), ``--image photo`` a photo-like one (1.9 MB: the client's
base64 and Pillow work per job become about 30 ms of CPU, as with a real provider), ``--image
drawn`` makes the fake draw each one (it then serialises C answers due together).

Baseline, in the same run: the same provider client alone, ``--baseline-jobs`` calls (10 x C
by default) gated by a plain ``asyncio.Semaphore(C)``: no ledger, no scheduler, no service.
Its ratio to its own ideal shows what the fake provider and the client cost on this machine.
Usage::

    python bench/throughput.py [--jobs 200] [--caps 4 8] [--latency 1.0] [--baseline-jobs N]
                               [--image flat|photo|drawn]

Target (issue 6): wall time / ceil(J / C) <= 1.05.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import Core, machine, open_core, requester, table
from bot.models import GenerationRequest
from bot.scheduler import Scheduler

TARGET_RATIO = 1.05
REQUEST = GenerationRequest(prompt="a lighthouse at dusk", model="stability/sdxl", size="1024x1024")


@dataclass(frozen=True, slots=True)
class Throughput:
    cap: int
    jobs: int
    wall_s: float
    cpu_s: float  # this process's CPU time (the fake provider's drawing included)
    latency: float

    @property
    def ideal_s(self) -> float:
        return math.ceil(self.jobs / self.cap) * self.latency

    @property
    def ratio(self) -> float:
        return self.wall_s / self.ideal_s


async def through_service(core: Core, *, cap: int, jobs: int, latency: float) -> Throughput:
    """``jobs`` jobs submitted at once, two per user, through the service and a scheduler."""
    scheduler = Scheduler(max_concurrent=cap, max_per_user=2, max_queue=jobs)
    service = core.service(scheduler=scheduler, job_timeout=900.0)
    started, cpu = time.perf_counter(), time.process_time()
    results = await asyncio.gather(
        *(service.generate(REQUEST, requester(f"U{i // 2:04d}")) for i in range(jobs))
    )
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert len(results) == jobs and all(r.images for r in results)
    await service.shutdown(0.0)
    return Throughput(cap, jobs, wall, cpu, latency)


async def through_semaphore(core: Core, *, cap: int, jobs: int, latency: float) -> Throughput:
    """The baseline: the same provider client, ``jobs`` calls under a plain semaphore."""
    gate = asyncio.Semaphore(cap)
    spec = core.catalog.get(REQUEST.model)

    async def one() -> None:
        async with gate:
            await core.provider.generate(REQUEST, spec)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(jobs)))
    return Throughput(cap, jobs, time.perf_counter() - started, time.process_time() - cpu, latency)


async def measure(
    *,
    jobs: int,
    caps: list[int],
    latency: float,
    baseline_jobs: int | None = None,
    image: str = "flat",
) -> list[tuple[Throughput, Throughput]]:
    """For each cap: (service run, baseline run)."""
    out: list[tuple[Throughput, Throughput]] = []
    async with open_core(latency=latency, image=image) as core:
        # Warm-up: connections, imports, the ledger's first writes.
        await through_semaphore(core, cap=2, jobs=4, latency=latency)
        for cap in caps:
            service = await through_service(core, cap=cap, jobs=jobs, latency=latency)
            n = baseline_jobs if baseline_jobs is not None else 10 * cap
            baseline = await through_semaphore(core, cap=cap, jobs=n, latency=latency)
            out.append((service, baseline))
    return out


def report(results: list[tuple[Throughput, Throughput]], image: str = "flat") -> str:
    rows = []
    for service, base in results:
        rows.append(
            (
                str(service.cap),
                str(service.jobs),
                f"{service.ideal_s:.0f}",
                f"{service.wall_s:.2f}",
                f"{service.ratio:.3f}",
                f"{service.cpu_s:.1f}",
                f"{base.jobs}",
                f"{base.wall_s:.2f}",
                f"{base.ratio:.3f}",
                "yes" if service.ratio <= TARGET_RATIO else "NO",
            )
        )
    header = (
        "cap C",
        "jobs",
        "ideal s",
        "wall s",
        "wall/ideal",
        "cpu s",
        "base jobs",
        "base wall s",
        "base/ideal",
        "<= 1.05",
    )
    latency = results[0][0].latency if results else 0.0
    return (
        f"{machine()}\nprovider latency {latency} s, 1024x1024 {image} PNG, two jobs per user; "
        "baseline: provider client + asyncio.Semaphore(C)\n" + table(header, rows)
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--caps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--baseline-jobs", type=int, default=None, help="default: 10 x C")
    parser.add_argument("--image", choices=("flat", "photo", "drawn"), default="flat")
    return parser.parse_args()


if __name__ == "__main__":
    args = _parse()
    print(
        report(
            asyncio.run(
                measure(
                    jobs=args.jobs,
                    caps=args.caps,
                    latency=args.latency,
                    baseline_jobs=args.baseline_jobs,
                    image=args.image,
                )
            ),
            args.image,
        )
    )

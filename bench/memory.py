"""Memory: peak RSS of the real bot process idle, and with 20 concurrent 2048x2048 jobs.

Starts the real ``imagine-bot run`` with Discord configured against the loopback fake Discord
and ``MAX_CONCURRENT_JOBS=20``, the provider being the fake image API answering after
``--latency`` seconds with a 2048x2048 PNG. Reads ``VmRSS`` and ``VmHWM`` (the peak) from
``/proc/PID/status``: idle once connected, then after 20 members' ``/imagine size:2048x2048``
have all been delivered (their provider calls all in flight at once, their answers arriving
together). Two kinds of image, each in its own bot process:

- ``flat``: the fake's own drawing (60 kB PNG: a flat colour and a band);
- ``photo``: a photo-like PNG (7.7 MB, what a real 2048x2048 picture weighs; 10 MB of base64
  in each provider answer), so every buffer on the way is its real size.

Baseline, in the same run: a bare ``python -c "import discord, slack_bolt, httpx, PIL"``
process (the libraries the bot cannot do without). Usage::

    python bench/memory.py [--jobs 20] [--latency 2.0] [--images flat photo]
                           [--bot-env NAME=VALUE ...]

Targets (issue 6): idle < 150 MB, with 20 concurrent 2048x2048 jobs < 400 MB (MB = MiB here).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import (
    REPO_ROOT,
    Rss,
    canned_reply,
    discord_bot,
    machine,
    proc_rss,
    table,
)
from tests.fakes.image_api import FakeImageAPI

IDLE_TARGET_MIB = 150
BUSY_TARGET_MIB = 400
BASELINE_CODE = (
    "import discord, slack_bolt, httpx, PIL.Image\n"
    "s = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
    "print(int(s['VmRSS'].split()[0]), int(s['VmHWM'].split()[0]))\n"
)


@dataclass(frozen=True, slots=True)
class MemoryRun:
    image: str
    side: int
    jobs: int
    idle: Rss
    busy: Rss  # after every job was delivered; hwm_mib is the peak over the whole run
    image_bytes: int


def baseline() -> Rss:
    """RSS of a bare interpreter that imported the bot's main libraries."""
    out = subprocess.run(
        [sys.executable, "-c", BASELINE_CODE],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rss_kb, hwm_kb = (int(x) for x in out.stdout.split())
    return Rss(rss_mib=rss_kb / 1024, hwm_mib=hwm_kb / 1024)


async def one_run(
    *,
    image: str,
    jobs: int,
    latency: float,
    workdir: Path,
    side: int = 2048,
    env: dict[str, str] | None = None,
) -> MemoryRun:
    reply = canned_reply(image, side)
    extra = {
        "MAX_CONCURRENT_JOBS": str(jobs),
        "MAX_QUEUED_JOBS": str(max(100, jobs)),
        **(env or {}),
    }
    async with (
        FakeImageAPI(latency=latency) as api,
        discord_bot(api, workdir, **extra) as (discord, bot),
    ):
        assert bot.process is not None
        pid = bot.process.pid
        # Idle: connected, commands synced, nothing asked yet.
        await discord.wait_for(lambda: discord.command_syncs, timeout=30)
        idle = proc_rss(pid)
        api.script(*(reply for _ in range(jobs)))
        size = f"{side}x{side}"
        interactions = [
            await discord.slash(
                "imagine", {"prompt": f"a harbour at dawn {i}", "size": size}, member=member
            )
            for i, member in enumerate(discord.member(f"user{i}") for i in range(jobs))
        ]
        # All in flight at once: every provider call has arrived before the first answers.
        await discord.wait_for(lambda: len(api.generations) >= jobs, timeout=max(30, latency))
        for interaction in interactions:
            message = await discord.wait_response(interaction, timeout=120)
            assert message.attachments, message.text
        busy = proc_rss(pid)
    return MemoryRun(image, side, jobs, idle, busy, len(reply.body))


async def measure(
    *,
    jobs: int = 20,
    latency: float = 2.0,
    images: tuple[str, ...] = ("flat", "photo"),
    side: int = 2048,
    env: dict[str, str] | None = None,
) -> tuple[Rss, list[MemoryRun]]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        for image in images:
            runs.append(
                await one_run(
                    image=image,
                    jobs=jobs,
                    latency=latency,
                    workdir=Path(tmp) / image,
                    side=side,
                    env=env,
                )
            )
    return baseline(), runs


def report(base: Rss, runs: list[MemoryRun]) -> str:
    rows = [("baseline: python + imports", "-", f"{base.rss_mib:.0f}", f"{base.hwm_mib:.0f}", "")]
    for run in runs:
        rows.append(
            (
                f"bot idle ({run.image} run)",
                "-",
                f"{run.idle.rss_mib:.0f}",
                f"{run.idle.hwm_mib:.0f}",
                "yes" if run.idle.hwm_mib < IDLE_TARGET_MIB else "NO",
            )
        )
        rows.append(
            (
                f"bot, {run.jobs} x {run.side}x{run.side} {run.image}",
                f"{run.image_bytes / 1e6:.2f}",
                f"{run.busy.rss_mib:.0f}",
                f"{run.busy.hwm_mib:.0f}",
                "yes" if run.busy.hwm_mib < BUSY_TARGET_MIB else "NO",
            )
        )
    header = ("process", "answer MB", "RSS MiB", "peak MiB", "target met")
    return (
        f"{machine()}\ntargets: idle < {IDLE_TARGET_MIB} MiB, busy < {BUSY_TARGET_MIB} MiB "
        "(peak = VmHWM)\n" + table(header, rows)
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--images", nargs="+", choices=("flat", "photo"), default=["flat", "photo"])
    parser.add_argument(
        "--bot-env",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the bot process (e.g. MALLOC_ARENA_MAX=2)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    args = _parse()
    print(
        report(
            *asyncio.run(
                measure(
                    jobs=args.jobs,
                    latency=args.latency,
                    images=tuple(args.images),
                    env=dict(item.split("=", 1) for item in args.bot_env),
                )
            )
        )
    )

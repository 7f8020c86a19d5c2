"""Acknowledgement latency: 100 commands arriving at once at the real bot process.

Starts the real ``imagine-bot run`` against the loopback fake Discord (and/or the fake Slack in
Socket Mode), sends N ``/imagine`` commands from N different users back to back, and measures
each from the moment the fake sends it (``INTERACTION_CREATE`` on the gateway, or the Socket
Mode envelope) to the moment the bot's acknowledgement arrives (the interaction callback, or
the envelope ack). The provider stalls every generation until the acks are in, as a real one
taking seconds would, so the measurement is the acknowledgement path under a burst.

The fake sends the N commands back to back as fast as it can build them (about 0.3 ms each),
yielding to its event loop between two, so that it stamps each acknowledgement when it
arrives rather than after the last send.

Baseline, in the same run: a burst of N concurrent trivial HTTP requests to the same fake
(``GET /users/@me`` on Discord, ``auth.test`` on Slack) from a child process on warmed
keep-alive connections (``bench._support.http_burst``): what N round trips at once through
the fake cost, its own handling included. The ratio shows what the bot adds. Usage::

    python bench/ack.py [--commands N] [--runs N] [--platform discord slack]

Target (issue 6): p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import (
    discord_bot,
    http_burst,
    machine,
    percentile,
    slack_bot,
    table,
)
from tests.fakes.image_api import FakeImageAPI, Stall
from tests.fakes.slack import FakeSlack

TARGET_P99_S = 0.050
WARM_UP = 3


@dataclass(frozen=True, slots=True)
class AckRun:
    platform: str
    acks: list[float]  # seconds, one per command
    baseline: list[float]  # seconds, one per trivial request

    def figures(self) -> dict[str, float]:
        return {
            "p50": percentile(self.acks, 50),
            "p99": percentile(self.acks, 99),
            "max": max(self.acks),
            "base_p50": percentile(self.baseline, 50),
            "base_p99": percentile(self.baseline, 99),
        }


async def discord_run(commands: int, workdir: Path, *, warm_up: int = WARM_UP) -> AckRun:
    """One bot process; ``commands`` /imagine interactions from as many members at once."""
    async with FakeImageAPI() as api, discord_bot(api, workdir) as (discord, _bot):
        warm = [discord.member(f"warm{i}") for i in range(warm_up)]
        for member in warm:  # one full job each: imports, pools and caches warmed
            interaction = await discord.slash("imagine", {"prompt": "warm-up"}, member=member)
            await discord.wait_response(interaction, timeout=60)
        baseline = await http_burst(
            f"{discord.api_base_url}/users/@me",
            commands,
            method="GET",
            headers={"Authorization": f"Bot {discord.token}"},
        )
        api.script(*(Stall() for _ in range(commands)))
        members = [discord.member(f"user{i}") for i in range(commands)]
        interactions = []
        for i, member in enumerate(members):
            prompt = f"a red fox, take {i}"
            interactions.append(await discord.slash("imagine", {"prompt": prompt}, member=member))
            await asyncio.sleep(0)  # let the fake take callbacks in while it sends
        await discord.wait_for(lambda: all(i.acked for i in interactions), timeout=60)
        acks = [i.ack_delay or 0.0 for i in interactions]
        api.release.set()  # let the running jobs finish; shutdown settles the rest
    return AckRun("discord", acks, baseline)


async def slack_run(commands: int, workdir: Path, *, warm_up: int = WARM_UP) -> AckRun:
    """One bot process in Socket Mode; ``commands`` /imagine envelopes at once."""
    async with FakeImageAPI() as api, slack_bot(api, workdir) as (slack, _bot):
        for i in range(warm_up):
            await slack.slash_command("warm-up", user=f"UWARM{i}")
            await slack.wait_for(partial(_uploaded, slack, i + 1), timeout=60)
        baseline = await http_burst(
            f"{slack.base_url}auth.test",
            commands,
            method="POST",
            headers={"Authorization": f"Bearer {slack.bot_token}"},
        )
        api.script(*(Stall() for _ in range(commands)))
        envelopes = []
        for i in range(commands):
            envelopes.append(await slack.slash_command(f"a red fox, take {i}", user=f"U{i:04d}"))
            await asyncio.sleep(0)  # let the fake take acks in while it sends
        await slack.wait_for(lambda: all(slack.ack_for(e) for e in envelopes), timeout=60)
        acks = [ack.at - e.sent_at for e in envelopes if (ack := slack.ack_for(e)) is not None]
        api.release.set()
    return AckRun("slack", acks, baseline)


def _uploaded(slack: FakeSlack, count: int) -> bool:
    return len(slack.uploads_in("C1")) >= count


RUNNERS = {"discord": discord_run, "slack": slack_run}


async def main(commands: int, runs: int, platforms: list[str]) -> list[AckRun]:
    results: list[AckRun] = []
    with tempfile.TemporaryDirectory(prefix="ack-bench-") as tmp:
        for name in platforms:
            for index in range(runs):
                workdir = Path(tmp) / f"{name}-{index}"
                results.append(await RUNNERS[name](commands, workdir))
    return results


def report(results: list[AckRun], commands: int) -> str:
    rows = []
    counts: dict[str, int] = {}
    for run in results:
        f = run.figures()
        counts[run.platform] = counts.get(run.platform, 0) + 1
        rows.append(
            (
                run.platform,
                str(counts[run.platform]),
                f"{f['p50'] * 1000:.1f}",
                f"{f['p99'] * 1000:.1f}",
                f"{f['max'] * 1000:.1f}",
                f"{f['base_p50'] * 1000:.1f}",
                f"{f['base_p99'] * 1000:.1f}",
                f"{f['p99'] / f['base_p99']:.1f}",
                "yes" if f["p99"] < TARGET_P99_S else "NO",
            )
        )
    header = (
        "platform",
        "run",
        "ack p50 ms",
        "ack p99 ms",
        "ack max ms",
        "base p50 ms",
        "base p99 ms",
        "p99/base",
        "p99 < 50 ms",
    )
    return (
        f"{machine()}\n{commands} commands at once per run; "
        f"baseline: {commands} concurrent trivial HTTP requests to the same fake from a child "
        "process\n" + table(header, rows)
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--commands", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--platform", nargs="+", choices=sorted(RUNNERS), default=["discord", "slack"]
    )
    return parser.parse_args()


if __name__ == "__main__":
    args = _parse()
    print(report(asyncio.run(main(args.commands, args.runs, args.platform)), args.commands))

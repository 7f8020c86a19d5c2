"""Memory: peak RSS of the real bot process idle, and while bursts of 2048x2048 jobs arrive
at once; and its event loop's lag meanwhile.

Starts the real ``imagine-bot run`` with Discord configured against the loopback fake Discord,
``MAX_CONCURRENT_JOBS`` = the burst's size and ``HTTP_PORT`` set, the provider being the fake
image API answering after ``--latency`` seconds with ``n`` 2048x2048 PNGs per job. Reads
``VmRSS`` and ``VmHWM`` (the peak) from ``/proc/PID/status``: idle once connected, then after
every member's ``/imagine size:2048x2048 n:N`` has been delivered (their provider calls all in
flight at once, their answers arriving together). Meanwhile a child process asks the bot's
``/healthz`` every 20 ms: how long it takes to answer bounds the loop's lag from above. Each
scenario runs in its own bot process. Kinds of image:

- ``flat``: the fake's own drawing (60 kB PNG: a flat colour and a band);
- ``photo``: a photo-like PNG (7.7 MB, what a real 2048x2048 picture weighs; 10 MB of base64
  in each provider answer);
- ``max``: the heaviest 2048x2048 PNG (16-bit noise, 24 MiB, just under the 25 MiB download
  cap; an n=4 answer is 134 MB of JSON).

Then the same bursts against the provider client alone (``--client``; ``OpenAIImageClient``
with the bot's defaults on the bot's HTTP client, in a process of its own, the fake provider
in another): its peak RSS once idle, and the worst lag of a 5 ms ticker on its event loop.
Each job drops its images as soon as they come back, as the bot does once they are posted;
this is the part of the bot's memory that the provider client bounds, the rest being what
the Discord adapter holds while it re-encodes and uploads.

Baseline, in the same run: a bare ``python -c "import discord, slack_bolt, httpx, PIL"``
process (the libraries the bot cannot do without). Usage::

    python bench/memory.py [--runs flat:20x1 photo:20x1 max:20x1 max:4x4] [--latency 2.0]
                           [--bot-env NAME=VALUE ...] [--client | --bot]

A run is ``IMAGE:JOBSxN``. Targets: idle < 150 MB; 20 concurrent 2048x2048 jobs < 400 MB;
4 jobs of n=4 maximal answers < 600 MB; loop lag < 100 ms (MB = MiB here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import (
    FAKE_API_KEY,
    REPO_ROOT,
    Rss,
    canned_reply,
    discord_bot,
    free_port,
    http_probe,
    machine,
    percentile,
    proc_rss,
    provider_process,
    reset_peak_rss,
    table,
)
from tests.fakes.image_api import FakeImageAPI
from tests.fakes.lag import LoopLag

IDLE_TARGET_MIB = 150
LAG_TARGET_S = 0.1
SIDE = 2048
DEFAULT_RUNS = ("flat:20x1", "photo:20x1", "max:20x1", "max:4x4")
BASELINE_CODE = (
    "import discord, slack_bolt, httpx, PIL.Image\n"
    "s = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
    "print(int(s['VmRSS'].split()[0]), int(s['VmHWM'].split()[0]))\n"
)


@dataclass(frozen=True, slots=True)
class Scenario:
    image: str
    jobs: int
    n: int

    @classmethod
    def parse(cls, text: str) -> Scenario:
        image, _, shape = text.partition(":")
        jobs, _, n = shape.partition("x")
        return cls(image, int(jobs), int(n or 1))

    @property
    def target_mib(self) -> int:
        return 600 if self.n > 1 else 400

    def __str__(self) -> str:
        return f"{self.jobs} x n={self.n} {self.image}"


@dataclass(frozen=True, slots=True)
class MemoryRun:
    scenario: Scenario
    idle: Rss
    busy: Rss  # after every job was delivered; hwm_mib is the peak over the whole run
    answer_bytes: int
    probes: list[float]  # seconds each /healthz took during the burst
    seconds: float  # from the first command to the last delivery


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
    scenario: Scenario,
    *,
    latency: float,
    workdir: Path,
    side: int = SIDE,
    env: dict[str, str] | None = None,
) -> MemoryRun:
    reply = canned_reply(scenario.image, side, scenario.n)
    port = free_port()
    extra = {
        "MAX_CONCURRENT_JOBS": str(scenario.jobs),
        "MAX_QUEUED_JOBS": str(max(100, scenario.jobs)),
        "HTTP_PORT": str(port),
        **(env or {}),
    }
    loop = asyncio.get_running_loop()
    async with (
        FakeImageAPI(latency=latency) as api,
        discord_bot(api, workdir, **extra) as (discord, bot),
    ):
        assert bot.process is not None
        pid = bot.process.pid
        # Idle: connected, commands synced, nothing asked yet.
        await discord.wait_for(lambda: discord.command_syncs, timeout=30)
        idle = proc_rss(pid)
        api.script(*(reply for _ in range(scenario.jobs)))
        options = {"size": f"{side}x{side}", "n": scenario.n}
        async with http_probe(f"http://127.0.0.1:{port}/healthz") as probes:
            started = loop.time()
            interactions = [
                await discord.slash(
                    "imagine", {"prompt": f"a harbour at dawn {i}", **options}, member=member
                )
                for i, member in enumerate(discord.member(f"user{i}") for i in range(scenario.jobs))
            ]
            # All in flight at once: every provider call arrives before the first answers.
            await discord.wait_for(
                lambda: len(api.generations) >= scenario.jobs, timeout=max(30, latency)
            )
            for interaction in interactions:
                message = await discord.wait_response(interaction, timeout=300)
                assert len(message.attachments) == scenario.n, message.text
            seconds = loop.time() - started
        busy = proc_rss(pid)
    return MemoryRun(scenario, idle, busy, len(reply.body), probes, seconds)


async def measure(
    runs: tuple[Scenario, ...],
    *,
    latency: float = 2.0,
    side: int = SIDE,
    env: dict[str, str] | None = None,
) -> tuple[Rss, list[MemoryRun]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        for index, scenario in enumerate(runs):
            workdir = Path(tmp) / f"run{index}"
            results.append(
                await one_run(scenario, latency=latency, workdir=workdir, side=side, env=env)
            )
    return baseline(), results


@dataclass(frozen=True, slots=True)
class ClientRun:
    scenario: Scenario
    idle_mib: float  # the client's process, before the burst
    peak_mib: float  # its peak RSS during the burst
    lags: list[float]  # how late each tick of a 5 ms ticker ran
    seconds: float


async def client_run(
    scenario: Scenario, *, latency: float, side: int = SIDE, budget_mib: float | None = None
) -> ClientRun:
    """The burst against ``OpenAIImageClient`` alone, in a child process; ``budget_mib``
    overrides its ``answer_budget_bytes``."""
    spec = {"image": scenario.image, "jobs": scenario.jobs, "n": scenario.n, "budget": budget_mib}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.memory",
        "--client-child",
        json.dumps({**spec, "latency": latency, "side": side}),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError("the client run failed")
    found = json.loads(out.splitlines()[-1])
    return ClientRun(scenario, found["idle"], found["peak"], found["lags"], found["seconds"])


async def _client_child(spec: dict[str, Any]) -> None:
    import httpx
    from pydantic import SecretStr

    from bot.catalog import load_catalog
    from bot.models import GenerationRequest
    from bot.provider.client import OpenAIImageClient, new_http_client
    from bot.retry import RetryPolicy

    jobs, n, side = int(spec["jobs"]), int(spec["n"]), int(spec["side"])
    model = load_catalog(None).default
    request = GenerationRequest(
        prompt="a harbour at dawn", model=model.id, size=f"{side}x{side}", n=n, seed=1
    )
    loop = asyncio.get_running_loop()
    async with provider_process(
        float(spec["latency"]), image=spec["image"], side=side, n=n
    ) as base_url:
        http: httpx.AsyncClient = new_http_client(timeout=120.0)
        budget = {"answer_budget_bytes": int(spec["budget"] * 2**20)} if spec["budget"] else {}
        client = OpenAIImageClient(  # as adapters/runtime.py builds it, with the defaults
            http=http,
            base_url=base_url,
            api_key=SecretStr(FAKE_API_KEY),
            timeout=120.0,
            retry=RetryPolicy(provider_retries=0),
            max_download_bytes=25 * 1024 * 1024,
            **budget,
        )
        idle = proc_rss()
        reset_peak_rss()

        async def one() -> int:
            images = await client.generate(request, model)
            assert len(images) == n
            return len(images)  # the images are dropped here, as once they are posted

        async with LoopLag() as lag:
            started = loop.time()
            await asyncio.gather(*(one() for _ in range(jobs)))
            seconds = loop.time() - started
        peak = proc_rss()
        await http.aclose()
    print(
        json.dumps(
            {"idle": idle.rss_mib, "peak": peak.hwm_mib, "lags": lag.lags, "seconds": seconds}
        )
    )


def client_report(runs: list[ClientRun]) -> str:
    rows = []
    for run in runs:
        lag = max(run.lags, default=0.0)
        rows.append(
            (
                f"provider client, {run.scenario}",
                f"{run.seconds:.1f}",
                f"{run.idle_mib:.0f}",
                f"{run.peak_mib:.0f}",
                _met(run.peak_mib < run.scenario.target_mib),
                f"{lag * 1000:.0f}",
                f"{percentile(run.lags, 99) * 1000:.0f}" if run.lags else "-",
                _met(lag < LAG_TARGET_S),
            )
        )
    header = (
        "process",
        "burst s",
        "idle MiB",
        "peak MiB",
        "< target",
        "tick lag max ms",
        "p99 ms",
        "< 100 ms",
    )
    return table(header, rows)


def report(base: Rss, runs: list[MemoryRun]) -> str:
    rows = [("baseline: python + imports", "-", "-", f"{base.hwm_mib:.0f}", "", "-", "-", "")]
    for run in runs:
        idle_ok = run.idle.hwm_mib < IDLE_TARGET_MIB
        idle = f"{run.idle.hwm_mib:.0f}"
        rows.append((f"bot idle ({run.scenario} run)", "-", "-", idle, _met(idle_ok), "-", "-", ""))
        lag = max(run.probes, default=0.0)
        rows.append(
            (
                f"bot, {run.scenario}",
                f"{run.answer_bytes / 1e6:.1f}",
                f"{run.seconds:.1f}",
                f"{run.busy.hwm_mib:.0f}",
                _met(run.busy.hwm_mib < run.scenario.target_mib),
                f"{lag * 1000:.0f}",
                f"{percentile(run.probes, 99) * 1000:.0f}" if run.probes else "-",
                _met(lag < LAG_TARGET_S),
            )
        )
    header = (
        "process",
        "answer MB",
        "burst s",
        "peak MiB",
        "< target",
        "healthz max ms",
        "p99 ms",
        "< 100 ms",
    )
    return (
        f"{machine()}\ntargets: idle < {IDLE_TARGET_MIB} MiB; peak < 400 MiB (n=1), < 600 MiB "
        f"(n=4); /healthz < {LAG_TARGET_S * 1000:.0f} ms during the burst (peak = VmHWM)\n"
        + table(header, rows)
    )


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), metavar="IMAGE:JOBSxN")
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument(
        "--budget-mib",
        type=float,
        default=None,
        help="the provider client's answer budget in --client runs (default: its own)",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--client", action="store_true", help="the provider client alone")
    only.add_argument("--bot", action="store_true", help="the bot process only")
    parser.add_argument(
        "--bot-env",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the bot process (e.g. MALLOC_ARENA_MAX=2)",
    )
    return parser.parse_args()


async def _main(args: argparse.Namespace) -> None:
    runs = tuple(Scenario.parse(text) for text in args.runs)
    if not args.client:
        env = dict(item.split("=", 1) for item in args.bot_env)
        print(report(*await measure(runs, latency=args.latency, env=env)))
    if not args.bot:
        clients = [
            await client_run(scenario, latency=args.latency, budget_mib=args.budget_mib)
            for scenario in runs
        ]
        print(client_report(clients))


if __name__ == "__main__" and sys.argv[1:2] == ["--client-child"]:
    asyncio.run(_client_child(json.loads(sys.argv[2])))
elif __name__ == "__main__":
    asyncio.run(_main(_parse()))

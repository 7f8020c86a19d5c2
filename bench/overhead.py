"""End-to-end overhead: time to a delivered image divided by the provider's latency, at 1 s
provider latency and 1024x1024.

Four ways through the same fake provider (``FakeImageAPI(latency=1.0)``), one job at a time,
interleaved so that drift on the machine hits all of them alike:

- ``raw HTTP`` (the baseline): the generation request alone, posted with the process's
  ``httpx`` client and its body read; this is the provider's latency as the bot sees it;
- ``provider``: ``OpenAIImageClient.generate`` (JSON, base64, Pillow check);
- ``service``: ``ImageService.generate`` with the scheduler and a file ledger (hold, provider,
  deliver, charge), timed to the ``deliver`` call and to the return (charge written);
- ``discord`` (unless ``--no-discord``): the real ``imagine-bot run`` process against the fake
  Discord, from ``INTERACTION_CREATE`` to the image visible in the channel (upload included).

Usage::

    python bench/overhead.py [--jobs 10] [--latency 1.0] [--size 1024x1024] [--no-discord]
                             [--image flat|photo]

The provider answers every request with the same pre-encoded PNG (``bench._support.
canned_reply``): ``flat`` (default) is the fake's own drawing (16 kB at 1024x1024), ``photo``
a photo-like one (1.9 MB) whose transfer, base64 and Pillow check cost what a real picture's
do.

Target (issue 6): delivered / provider latency <= 1.05, where the provider latency is the
baseline measured in the same run (the nominal latency is shown too).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import (
    Core,
    canned_reply,
    discord_bot,
    fmt_spread,
    machine,
    open_core,
    requester,
    table,
)
from bot.models import GenerationRequest, GenerationResult
from bot.scheduler import Scheduler
from tests.fakes.image_api import FakeImageAPI

TARGET_RATIO = 1.05


@dataclass
class Overhead:
    latency: float
    size: str
    image: str = "flat"
    times: dict[str, list[float]] = field(default_factory=dict)

    def add(self, path: str, seconds: float) -> None:
        self.times.setdefault(path, []).append(seconds)

    def median(self, path: str) -> float:
        return statistics.median(self.times[path])


async def _core_paths(core: Core, jobs: int, result: Overhead) -> None:
    request = GenerationRequest(
        prompt="a lighthouse at dusk", model="stability/sdxl", size=result.size
    )
    spec = core.catalog.get(request.model)
    service = core.service(scheduler=Scheduler(), job_timeout=900.0)
    body = {
        "model": spec.id,
        "prompt": request.prompt,
        "n": 1,
        "size": request.size,
        "response_format": "b64_json",
    }
    headers = {"Authorization": f"Bearer {core.api_key}"}
    url = f"{core.base_url}/images/generations"

    async def raw() -> None:
        response = await core.http.post(url, json=body, headers=headers)
        response.raise_for_status()
        assert response.content

    delivered: list[float] = []

    async def deliver(_: GenerationResult) -> None:
        delivered.append(time.perf_counter())

    for index in range(jobs + 1):  # the first round warms connections and caches up
        started = time.perf_counter()
        await raw()
        raw_s = time.perf_counter() - started

        started = time.perf_counter()
        await core.provider.generate(request, spec)
        provider_s = time.perf_counter() - started

        started = time.perf_counter()
        await service.generate(request, requester(f"U{index}"), deliver=deliver)
        service_s = time.perf_counter() - started
        if index:
            result.add("raw HTTP", raw_s)
            result.add("provider", provider_s)
            result.add("service: delivered", delivered[-1] - started)
            result.add("service: charged", service_s)
    await service.shutdown(0.0)


async def _discord_path(jobs: int, result: Overhead, workdir: Path) -> None:
    async with (
        FakeImageAPI(latency=result.latency) as api,
        discord_bot(api, workdir) as (discord, _bot),
    ):
        side = int(result.size.partition("x")[0])
        api.script(*(canned_reply(result.image, side) for _ in range(jobs + 1)))
        for index in range(jobs + 1):
            member = discord.member(f"user{index}")
            interaction = await discord.slash(
                "imagine", {"prompt": "a lighthouse at dusk", "size": result.size}, member=member
            )
            message = await discord.wait_response(interaction, timeout=60)
            done = time.monotonic()
            assert message.attachments, message.text
            if index:
                result.add("discord: visible", done - interaction.sent_at)


async def measure(
    *, jobs: int, latency: float, size: str, discord: bool, image: str = "flat"
) -> Overhead:
    result = Overhead(latency, size, image)
    side = int(size.partition("x")[0])
    async with open_core(latency=latency, image=image, side=side) as core:
        await _core_paths(core, jobs, result)
    if discord:
        with tempfile.TemporaryDirectory(prefix="overhead-bench-") as tmp:
            await _discord_path(jobs, result, Path(tmp))
    return result


def report(result: Overhead) -> str:
    base = result.median("raw HTTP")
    rows = []
    for path, times in result.times.items():
        median = statistics.median(times)
        rows.append(
            (
                path,
                f"{median:.3f}",
                f"{max(times):.3f}",
                f"{(median - base) * 1000:+.1f}",
                f"{median / base:.3f}",
                f"{median / result.latency:.3f}",
                "" if path == "raw HTTP" else ("yes" if median / base <= TARGET_RATIO else "NO"),
            )
        )
    header = (
        "path",
        "median s",
        "max s",
        "vs base ms",
        "/ provider",
        "/ nominal",
        "<= 1.05",
    )
    jobs = len(result.times["raw HTTP"])
    return (
        f"{machine()}\n{jobs} jobs per path, one at a time, {result.size} {result.image} PNG, "
        "provider latency "
        f"{result.latency} s; baseline: raw HTTP (provider latency as the bot sees it)\n"
        + table(header, rows)
        + "\nraw HTTP runs (s): "
        + fmt_spread(result.times["raw HTTP"])
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--no-discord", action="store_true")
    parser.add_argument("--image", choices=("flat", "photo"), default="flat")
    return parser.parse_args()


if __name__ == "__main__":
    args = _parse()
    print(
        report(
            asyncio.run(
                measure(
                    jobs=args.jobs,
                    latency=args.latency,
                    size=args.size,
                    discord=not args.no_discord,
                    image=args.image,
                )
            )
        )
    )

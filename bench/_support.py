"""What the benchmarks share: the machine line, percentiles and tables, the real bot process
against the loopback fakes, the core (service + ledger + real provider client) in process,
and RSS readings from ``/proc``.

The benchmarks import the test fakes (``tests/fakes``): they are real local servers speaking
the platforms' protocols, so the bot under measurement runs its production code paths.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import platform
import socket
import statistics
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from bot.catalog import ModelCatalog, load_catalog  # noqa: E402
from bot.models import Limits, Requester  # noqa: E402
from bot.provider.client import OpenAIImageClient, new_http_client  # noqa: E402
from bot.retry import RetryPolicy  # noqa: E402
from bot.store.ledger import SqliteLedger  # noqa: E402
from tests.fakes.discord import FakeDiscord  # noqa: E402
from tests.fakes.image_api import FAKE_API_KEY, FakeImageAPI, RawReply, _draw  # noqa: E402
from tests.fakes.process import BotProcess  # noqa: E402
from tests.fakes.slack import FakeSlack  # noqa: E402

__all__ = [
    "FAKE_API_KEY",
    "REPO_ROOT",
    "Core",
    "Rss",
    "bot_env",
    "canned_reply",
    "discord_bot",
    "fmt_spread",
    "free_port",
    "http_burst",
    "http_probe",
    "machine",
    "open_core",
    "percentile",
    "proc_rss",
    "provider_process",
    "requester",
    "reset_peak_rss",
    "slack_bot",
    "table",
]

BIG = 10**12


# -- reporting ------------------------------------------------------------------------------


def machine() -> str:
    """One line naming what the numbers were measured on (and how busy it was)."""
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"python {platform.python_version()}, {os.cpu_count()} CPU(s) ({cpu}), load average {load}"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (``q`` in 0..100): p99 of 100 samples is the 99th
    smallest, so one slow outlier in 100 does not hide."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def fmt_spread(values: Iterable[float], fmt: str = "{:.3f}") -> str:
    """``a · b · c`` for a few runs, or ``median (min-max)`` for many."""
    items = list(values)
    if len(items) <= 5:
        return " · ".join(fmt.format(v) for v in items)
    return (
        f"{fmt.format(statistics.median(items))} "
        f"({fmt.format(min(items))}-{fmt.format(max(items))})"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A right-aligned plain-text table."""
    all_rows = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in all_rows
    )


# -- memory ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rss:
    """Resident set size now and its peak (high-water mark), in MiB."""

    rss_mib: float
    hwm_mib: float


def reset_peak_rss() -> None:
    """Make this process's VmHWM start again from its RSS now (Linux ``clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def proc_rss(pid: int | str = "self") -> Rss:
    """``VmRSS`` and ``VmHWM`` of a process, from ``/proc/PID/status``."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return Rss(rss_mib=fields["VmRSS"], hwm_mib=fields["VmHWM"])


# -- the real bot process -------------------------------------------------------------------


def bot_env(api: FakeImageAPI, **extra: str) -> dict[str, str]:
    """The bot's environment for a benchmark: the fake provider, no quotas, INFO logs (as in
    production; the test harness's DEBUG would add its own cost), plus ``extra``."""
    return {
        "IMAGE_API_BASE_URL": api.base_url,
        "IMAGE_API_KEY": FAKE_API_KEY,
        "IMAGE_API_MAX_RETRIES": "0",
        "LOG_LEVEL": "INFO",
        **extra,
    }


@contextlib.asynccontextmanager
async def discord_bot(
    api: FakeImageAPI, workdir: Path, **extra: str
) -> AsyncIterator[tuple[FakeDiscord, BotProcess]]:
    """A fake Discord and the real ``imagine-bot run`` connected to it (READY sent)."""
    async with FakeDiscord() as discord:
        bot = BotProcess(bot_env(api, **discord.env(), **extra), workdir=workdir)
        try:
            await bot.start()
            discord.watch(bot)
            await discord.wait_connected(timeout=60)
            yield discord, bot
        except BaseException:
            sys.stderr.write(bot.log()[-4000:])
            raise
        finally:
            await bot.stop()


@contextlib.asynccontextmanager
async def slack_bot(
    api: FakeImageAPI, workdir: Path, **extra: str
) -> AsyncIterator[tuple[FakeSlack, BotProcess]]:
    """A fake Slack and the real ``imagine-bot run`` connected to it in Socket Mode."""
    async with FakeSlack() as slack:
        bot = BotProcess(bot_env(api, **slack.env(), **extra), workdir=workdir)
        try:
            await bot.start()
            slack.watch(bot)
            await slack.wait_for(lambda: slack.connections >= 1, timeout=60)
            yield slack, bot
        except BaseException:
            sys.stderr.write(bot.log()[-4000:])
            raise
        finally:
            await bot.stop()


def canned_reply(image: str = "flat", side: int = 1024, n: int = 1) -> RawReply:
    """A provider answer carrying ``n`` copies of one ``side``x``side`` PNG, encoded once and
    reusable.

    ``flat`` is what the fake draws itself (a flat colour with a band: about 16 kB at
    1024x1024, 60 kB at 2048x2048, cheap to decode). ``photo`` has photo-like entropy (smooth
    colour noise: about 1.9 MB at 1024x1024 and 7.7 MB at 2048x2048, what a real generated
    picture weighs), so every buffer and decode on the way costs what it would in production.
    ``max`` is the heaviest PNG of that size: 16-bit RGB noise, stored uncompressed (24 MiB at
    2048x2048, just under the default 25 MiB cap; 32 MiB of base64 per image).
    """
    from PIL import Image

    if image == "flat":
        data = _draw(side, side, "benchmark", "PNG")
    elif image == "photo":
        seed = Image.frombytes("RGB", (side // 8, side // 8), os.urandom((side // 8) ** 2 * 3))
        picture = seed.resize((side, side), Image.Resampling.BILINEAR)
        out = io.BytesIO()
        picture.save(out, format="PNG", compress_level=1)
        data = out.getvalue()
    elif image == "max":
        data = _noise_png16(side)
    else:
        raise ValueError(f"unknown image kind {image!r}")
    encoded = base64.b64encode(data).decode()
    body = {"created": int(time.time()), "data": [{"b64_json": encoded}] * n}
    return RawReply(body=json.dumps(body).encode())


def _noise_png16(side: int) -> bytes:
    """A ``side``x``side`` 16-bit RGB PNG of random pixels, deflate level 0 (Pillow cannot
    write 16-bit RGB)."""
    rows = b"".join(b"\x00" + os.urandom(side * 6) for _ in range(side))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 16, 2, 0, 0, 0)
    idat = zlib.compress(rows, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a child process to listen on)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def http_probe(url: str, *, every: float = 0.02) -> AsyncIterator[list[float]]:
    """A child process that GETs ``url`` every ``every`` seconds (one keep-alive connection)
    while the block runs; the list it yields is filled, at the end, with how long each
    answer took. Asked of the bot's own HTTP server, it bounds the bot's event-loop lag from
    above: the answer cannot come sooner than the loop gets to it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._support",
        "--probe",
        json.dumps({"url": url, "every": every}),
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    times: list[float] = []
    try:
        ready = await asyncio.wait_for(process.stdout.readline(), 30)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the probe did not start: {ready!r}")
        yield times
    finally:
        process.stdin.close()
        out = await asyncio.wait_for(process.stdout.read(), 60)
        await process.wait()
    times.extend(json.loads(out))


async def _probe(spec: dict[str, Any]) -> None:
    import aiohttp

    every = float(spec["every"])
    times: list[float] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # stdin closes: the parent is done
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        async with session.get(spec["url"]) as first:  # opens the connection
            await first.read()
        print("ready", flush=True)
        while not stop.is_set():
            started = time.monotonic()
            async with session.get(spec["url"]) as answer:
                await answer.read()
            times.append(time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    print(json.dumps(times))


# -- the core in process --------------------------------------------------------------------


def requester(user: str, *, workspace: str = "G1") -> Requester:
    return Requester(platform="discord", workspace_id=workspace, channel_id="C1", user_id=user)


@dataclass
class Core:
    """The production pieces of one process, built as ``adapters/runtime.py`` builds them:
    one pooled ``httpx`` client, the real provider client, a file ledger (WAL)."""

    base_url: str  # the fake provider's API root
    http: httpx.AsyncClient
    provider: OpenAIImageClient
    ledger: SqliteLedger
    catalog: ModelCatalog
    api_key: str = FAKE_API_KEY

    def service(self, **kwargs: Any) -> Any:
        """An ``ImageService`` on these pieces; ``kwargs`` go to its constructor (e.g.
        ``scheduler=``)."""
        from bot.service import ImageService

        return ImageService(
            catalog=self.catalog,
            provider=kwargs.pop("provider", self.provider),
            ledger=self.ledger,
            **kwargs,
        )


@contextlib.asynccontextmanager
async def provider_process(
    latency: float, *, image: str = "flat", side: int = 1024, n: int = 1
) -> AsyncIterator[str]:
    """``FakeImageAPI(latency=latency)`` in a child process; yields its API root.

    With ``image`` ``flat`` or ``photo``, every answer is the same pre-encoded PNG
    (``canned_reply(image, side)``), whatever was asked; with ``drawn`` the fake draws each
    image as it does in the tests. Drawing costs the fake 10-30 ms of CPU per image, one at a
    time, so C answers due together would queue behind each other in the fake, which a real
    provider's servers do not do; and in the benchmark's own process that work would compete
    for the GIL with the code under measurement."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._support",
        "--serve-provider",
        str(latency),
        image,
        str(side),
        str(n),
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line.startswith(b"http://"):
            raise RuntimeError(f"the fake provider did not start: {line!r}")
        yield line.decode().strip()
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _serve_provider(latency: float, image: str, side: int, n: int) -> None:
    """The child side of ``provider_process``: serve until stdin closes."""
    async with FakeImageAPI(latency=latency) as api:
        if image != "drawn":
            reply = canned_reply(image, side, n)
            api.script(*(reply for _ in range(100_000)))
        print(api.base_url, flush=True)
        await asyncio.to_thread(sys.stdin.buffer.read)


@contextlib.asynccontextmanager
async def open_core(
    *, latency: float, image: str = "flat", side: int = 1024, timeout: float = 120.0
) -> AsyncIterator[Core]:
    """The core wired to a fake provider answering after ``latency`` seconds, run in its own
    process (``provider_process``, which see for ``image`` and ``side``)."""
    limits = Limits(images_per_day=BIG, images_per_month=BIG, usd_micros_per_month=BIG)
    async with contextlib.AsyncExitStack() as stack:
        base_url = await stack.enter_async_context(
            provider_process(latency, image=image, side=side)
        )
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="imagine-bench-"))
        http = new_http_client(timeout=timeout)
        stack.push_async_callback(http.aclose)
        ledger = await SqliteLedger.open(os.path.join(tmp, "bench.db"), defaults=limits)
        stack.push_async_callback(ledger.close)
        provider = OpenAIImageClient(
            http=http,
            base_url=base_url,
            api_key=SecretStr(FAKE_API_KEY),
            timeout=timeout,
            retry=RetryPolicy(provider_retries=0),
            max_download_bytes=25 * 1024 * 1024,
        )
        yield Core(base_url, http, provider, ledger, load_catalog(None))


# -- a burst of trivial requests from another process ----------------------------------------


async def http_burst(url: str, n: int, *, method: str, headers: dict[str, str]) -> list[float]:
    """Seconds each of ``n`` concurrent ``method url`` requests took, measured by a child
    process (as the bot is one) on ``n`` warmed-up keep-alive connections: what a burst of
    ``n`` trivial round trips through the fake costs, the fake's own handling included."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._support",
        "--burst",
        json.dumps({"url": url, "n": n, "method": method, "headers": headers}),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError("the baseline burst failed")
    times: list[float] = json.loads(out)
    return times


async def _burst(spec: dict[str, Any]) -> None:
    import aiohttp

    n = int(spec["n"])

    async def one(session: aiohttp.ClientSession) -> float:
        started = time.monotonic()
        async with session.request(spec["method"], spec["url"], headers=spec["headers"]) as r:
            await r.read()
            r.raise_for_status()
        return time.monotonic() - started

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:
        await asyncio.gather(*(one(session) for _ in range(n)))  # opens n connections
        await asyncio.gather(*(one(session) for _ in range(n)))  # warm
        times = await asyncio.gather(*(one(session) for _ in range(n)))
    print(json.dumps(times))


if __name__ == "__main__" and sys.argv[1:2] == ["--serve-provider"]:
    asyncio.run(
        _serve_provider(float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    )
elif __name__ == "__main__" and sys.argv[1:2] == ["--burst"]:
    asyncio.run(_burst(json.loads(sys.argv[2])))
elif __name__ == "__main__" and sys.argv[1:2] == ["--probe"]:
    asyncio.run(_probe(json.loads(sys.argv[2])))

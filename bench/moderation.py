"""Moderation checks: how long the word-list and pattern check takes on hostile prompts, how
Python's ``re`` (the engine before RE2) grows on the same shapes, and how late the event loop
runs while many checks are under way.

1. Check time: ``PromptFilter.match`` (RE2) with the server's rules, on prompts built to make
   backtracking engines explore without end. Servers: the five backtracking shapes as
   patterns; and a "full" server with every rule it may have (500 words made of the letters
   ``1`` stands for, the shapes, and patterns up to the complexity budget), on prompts that miss
   every rule so that every rule is searched, at 4,000 characters (``MAX_PROMPT_LENGTH``'s
   default) and 16,000 (the most a check accepts).
2. Baseline: Python's ``re`` on the same shapes, and on the term ``lil`` as the filter used to
   compile it, with the input growing until one search takes over ``--re-limit`` seconds; RE2
   on the same inputs beside it.
3. Event-loop lag: the largest delay of a 5 ms ticker while ``--concurrent`` checks of the full
   server run at once through ``Moderation.screen`` (the moderation thread), and, as the
   baseline, while the same checks run on the event loop itself.

Usage::

    python bench/moderation.py [--repeats 20] [--concurrent 25] [--re-limit 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import machine, percentile, table
from bot.errors import InvalidRequestError, PromptRefusedError
from bot.models import GenerationRequest, Limits, Requester
from bot.moderation.admin import MAX_RULES, ModerationAdmin
from bot.moderation.filter import MAX_CHECKED_LENGTH, PromptFilter, builtin_terms, cached_filter
from bot.moderation.screening import Moderation
from bot.store.ledger import SqliteLedger
from bot.store.moderation import SqliteModerationStore
from tests.fakes.lag import LoopLag

SHAPES = ("(a+)+", "(a|a)*b", r"(.|\w)*!", "(a?){30}a{30}", "a*a*a*a*a*a*b")
HEAVY = [prefix + r"\w{0,220}!" for prefix in "jkpquvwxyz"]  # just under 2,000 steps each
HOSTILE = [
    "a" * 4000,
    ("a" * 29 + " ") * 133 + "a" * 10,
    "a " * 2000,
    "1" * 3999 + "x",
    "l1" * 1999 + "lx",
]
MISSES = ["1" * 3999 + "x", "l1o" * 1333 + "x", "\u00e9" * 4000, ("l1" * 7 + "x ") * 250]
LONG_MISSES = [("1" * 15 + "x ") * (MAX_CHECKED_LENGTH // 17), "l1o" * 5333 + "x"]
FLUX = "black-forest-labs/flux-1-schnell"


def words() -> Iterator[str]:
    """Blocked words made of i, l and o: each letter also accepts "1" or "0"."""
    for n in itertools.count(3):
        for letters in itertools.product("ilo", repeat=n):
            yield "".join(letters)


@dataclass(frozen=True, slots=True)
class CheckTimes:
    scenario: str
    seconds: list[float]

    def row(self) -> list[str]:
        ms = [s * 1000 for s in self.seconds]
        return [
            self.scenario,
            str(len(ms)),
            f"{statistics.median(ms):.2f}",
            f"{percentile(ms, 99):.2f}",
            f"{max(ms):.2f}",
        ]


@dataclass(frozen=True, slots=True)
class Growth:
    shape: str
    points: list[tuple[int, float, float]]  # input length, Python re seconds, RE2 seconds


@dataclass(frozen=True, slots=True)
class Lag:
    where: str
    checks: int
    worst_ms: float
    wall_s: float


def _member(server: str, *, admin: bool = False) -> Requester:
    user = "boss" if admin else "member"
    return Requester("bench", server, "C1", user, is_admin=admin)


async def _full_server(admin: ModerationAdmin, server: str, words_count: int) -> None:
    boss = _member(server, admin=True)
    for word in itertools.islice(words(), words_count):
        await admin.block_add(boss, word)
    for pattern in (*SHAPES, *HEAVY):
        try:
            await admin.block_add_pattern(boss, pattern)
        except InvalidRequestError:
            break  # the server's complexity budget is spent


def _timed(check: Callable[[str], object], prompts: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        for prompt in prompts:
            started = time.perf_counter()
            check(prompt)
            times.append(time.perf_counter() - started)
    return times


async def check_times(
    moderation: Moderation, *, repeats: int, words_count: int
) -> list[CheckTimes]:
    admin = ModerationAdmin(moderation)
    for pattern in SHAPES:
        await admin.block_add_pattern(_member("shapes", admin=True), pattern)
    await _full_server(admin, "full", words_count)
    builtin = PromptFilter(builtin_terms(), label="builtin")
    results = [CheckTimes("built-in list, hostile 4,000", _timed(builtin.match, HOSTILE, repeats))]
    for server, label, prompts in (
        ("shapes", "5 shapes, hostile 4,000", HOSTILE),
        ("full", "full server, misses 4,000", MISSES),
        ("full", f"full server, misses {MAX_CHECKED_LENGTH:,}", LONG_MISSES),
    ):
        rules = await moderation.rules("bench", server)
        server_filter = cached_filter(rules.blocked_terms, rules.blocked_patterns)
        results.append(CheckTimes(label, _timed(server_filter.match, prompts, repeats)))
    return results


@dataclass(frozen=True, slots=True)
class _Case:
    shape: str
    before: Callable[[int], str]  # the expression Python's re ran, for input length n
    after: Callable[[int], PromptFilter]  # the filter that runs now
    text: Callable[[int], str]
    start: int
    step: Callable[[int], int]


# The word "lil" as the filter compiled it for Python's re (each i or l also accepts "1").
_LIL_BEFORE = r"(?<![^\W_])[l1]+[i1]+[l1]+(?:e?s)?(?![^\W_])"
CASES = [
    _Case(
        "(a|a)*b",
        lambda n: "(a|a)*b",
        lambda n: PromptFilter(patterns=["(a|a)*b"]),
        lambda n: "a" * n,
        10,
        lambda n: n + 2,
    ),
    _Case(
        "a*a*a*a*a*a*b",
        lambda n: "a*a*a*a*a*a*b",
        lambda n: PromptFilter(patterns=["a*a*a*a*a*a*b"]),
        lambda n: "a" * n,
        25,
        lambda n: n * 2,
    ),
    _Case(
        "(a?){n}a{n}",
        lambda n: f"(a?){{{n}}}a{{{n}}}",
        lambda n: PromptFilter(patterns=[f"(a?){{{n}}}a{{{n}}}"]),
        lambda n: "a" * n,
        10,
        lambda n: n + 2,
    ),
    _Case(
        'word "lil"',
        lambda n: _LIL_BEFORE,
        lambda n: PromptFilter(["lil"]),
        lambda n: "1" * n + "x",
        50,
        lambda n: n * 2,
    ),
]


def growth(limit: float) -> list[Growth]:
    """Each case with a growing input until one Python ``re`` search takes over ``limit``."""
    results = []
    for case in CASES:
        points = []
        n = case.start
        while True:
            text = case.text(n)
            before, after = re.compile(case.before(n), re.IGNORECASE), case.after(n)
            started = time.perf_counter()
            before.search(text)
            old = time.perf_counter() - started
            started = time.perf_counter()
            after.match(text)
            points.append((n, old, time.perf_counter() - started))
            if old > limit:
                break
            n = case.step(n)
        results.append(Growth(case.shape, points))
    return results


async def worst_lag(work: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Await ``work()`` with a 5 ms ticker running; the ticker's worst delay and the wall
    time, in seconds."""
    async with LoopLag() as lag:
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        await work()
        wall = time.perf_counter() - started
    return lag.worst, wall


async def _all(check: Callable[[str], Awaitable[None]], prompts: list[str]) -> None:
    await asyncio.gather(*(check(p) for p in prompts))


async def lag(moderation: Moderation, concurrent: int) -> list[Lag]:
    prompts = list(itertools.islice(itertools.cycle([*MISSES, *LONG_MISSES]), concurrent))
    rules = await moderation.rules("bench", "full")
    server_filter = cached_filter(rules.blocked_terms, rules.blocked_patterns)
    builtin = PromptFilter(builtin_terms(), label="builtin")

    async def screened(prompt: str) -> None:
        request = GenerationRequest(prompt=prompt, model=FLUX, size="1024x1024")
        with contextlib.suppress(PromptRefusedError):
            await moderation.screen(request, _member("full"))

    async def on_loop(prompt: str) -> None:
        await asyncio.sleep(0)
        builtin.match(prompt) or server_filter.match(prompt)

    results = []
    for where, check in (("moderation thread", screened), ("event loop (baseline)", on_loop)):
        worst, wall = await worst_lag(functools.partial(_all, check, prompts))
        results.append(Lag(where, len(prompts), worst * 1000, wall))
    return results


def report(times: list[CheckTimes], grown: list[Growth], lags: list[Lag]) -> str:
    lines = [machine(), "", "Check time, ms (RE2, one check = every rule on one prompt):"]
    lines.append(table(["scenario", "checks", "median", "p99", "max"], (t.row() for t in times)))
    lines += ["", "Python re (before) against RE2 (now), seconds for one search:"]
    rows = []
    for g in grown:
        for n, before, after in g.points:
            rows.append([g.shape, str(n), f"{before:.4f}", f"{after:.5f}"])
    lines.append(table(["shape", "length", "Python re", "RE2"], rows))
    lines += ["", "Event-loop lag while checks run at once (5 ms ticker):"]
    lines.append(
        table(
            ["checks run on", "checks", "worst lag ms", "wall s"],
            ([x.where, str(x.checks), f"{x.worst_ms:.1f}", f"{x.wall_s:.2f}"] for x in lags),
        )
    )
    return "\n".join(lines)


async def measure(
    *, repeats: int, concurrent: int, re_limit: float, words_count: int = MAX_RULES
) -> tuple[list[CheckTimes], list[Growth], list[Lag]]:
    ledger = await SqliteLedger.open(":memory:", defaults=Limits())
    try:
        moderation = Moderation.open(SqliteModerationStore.on(ledger))
        times = await check_times(moderation, repeats=repeats, words_count=words_count)
        grown = growth(re_limit)
        lags = await lag(moderation, concurrent)
    finally:
        await ledger.close()
    return times, grown, lags


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=25)
    parser.add_argument("--re-limit", type=float, default=0.5)
    return parser.parse_args()


if __name__ == "__main__":
    args = _parse()
    figures = asyncio.run(
        measure(repeats=args.repeats, concurrent=args.concurrent, re_limit=args.re_limit)
    )
    print(report(*figures))

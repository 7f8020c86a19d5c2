"""No blocked word or admin pattern can freeze the bot: rules run on a linear-time engine, in a
worker thread. The shapes that backtrack for ever in Python's ``re`` are accepted as patterns
and checked quickly against 4,000-character hostile prompts, and the event loop keeps ticking
while a server with every rule it may have checks many such prompts at once.

The time bounds are generous on purpose (a check takes a few milliseconds; the figures are in
BENCHMARKS.md, from ``bench/moderation.py``): they catch a check that backtracks or blocks the
loop, which took minutes before, not a slow machine."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest

from bench import moderation as moderation_bench
from bot.errors import InvalidRequestError, PromptRefusedError
from bot.messages import describe
from bot.models import GenerationRequest, Limits, Requester
from bot.moderation.admin import MAX_RULES, ModerationAdmin
from bot.moderation.filter import MAX_CHECKED_LENGTH, cached_filter
from bot.moderation.screening import Moderation
from bot.store.ledger import SqliteLedger
from bot.store.moderation import SqliteModerationStore
from tests.fakes.lag import LoopLag

FLUX = "black-forest-labs/flux-1-schnell"
CHECK_BOUND = 0.05  # seconds per check
# Seconds the event loop may be late. The checks run on their own thread; on a busy 2-core
# machine that thread and other processes still took the loop's core for up to 155 ms (1 run
# of 10), while the same checks on the loop held it 236 to 399 ms at a time.
LAG_BOUND = 0.3

# Each shape, with a short prompt it matches.
SHAPES = {
    "(a+)+": "a",
    "(a|a)*b": "aab",
    r"(.|\w)*!": "wow!",
    "(a?){30}a{30}": "a" * 30,
    "a*a*a*a*a*a*b": "aaab",
}
# 4,000 characters each: long runs that backtracking engines explore without end, as typed,
# folded, and spelled out letter by letter ("a a a" is joined to "aaa" for the word lists).
HOSTILE = [
    "a" * 4000,
    ("a" * 29 + " ") * 133 + "a" * 10,
    "a " * 2000,
    "1" * 3999 + "x",
    "l1" * 1999 + "lx",
]


def member(server: str, *, admin: bool = False) -> Requester:
    return Requester(
        platform="discord",
        workspace_id=server,
        channel_id="C1",
        user_id="boss" if admin else "alice",
        is_admin=admin,
    )


def request(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, model=FLUX, size="1024x1024", n=1)


@pytest.fixture
async def moderation() -> AsyncIterator[Moderation]:
    ledger = await SqliteLedger.open(":memory:", defaults=Limits())
    yield Moderation.open(SqliteModerationStore.on(ledger))
    await ledger.close()


async def refused(moderation: Moderation, prompt: str, server: str) -> bool:
    """Whether ``server``'s rules refuse ``prompt``."""
    try:
        await moderation.screen(request(prompt), member(server))
    except PromptRefusedError:
        return True
    return False


async def check_time(moderation: Moderation, prompt: str, server: str) -> float:
    """Seconds the server's word-list and pattern check takes on ``prompt``: the work the
    moderation thread does for it (the database and the thread hop left out)."""
    rules = await moderation.rules("discord", server)
    server_filter = cached_filter(rules.blocked_terms, rules.blocked_patterns)
    started = time.perf_counter()
    server_filter.match(prompt)
    return time.perf_counter() - started


async def test_backtracking_shapes_are_accepted_and_checked_in_linear_time(
    moderation: Moderation,
) -> None:
    admin = ModerationAdmin(moderation)
    for index, (pattern, hit) in enumerate(SHAPES.items()):
        server = f"G{index}"
        assert await admin.block_add_pattern(member(server, admin=True), pattern) is True
        assert await refused(moderation, hit, server), pattern
        for prompt in HOSTILE:
            # Only (a+)+ (any a) and (a?){30}a{30} (thirty a's in a row) match these.
            expected = (pattern == "(a+)+" and "a" in prompt) or (
                pattern == "(a?){30}a{30}" and "a" * 30 in prompt
            )
            assert await refused(moderation, prompt, server) is expected, (pattern, prompt[:40])
            took = await check_time(moderation, prompt, server)
            assert took < CHECK_BOUND, (pattern, prompt[:40], took)


async def test_blocked_words_are_checked_in_linear_time_too(moderation: Moderation) -> None:
    # Each letter of "lil" also accepts "1": Python's re took minutes on a run of 1s.
    admin = ModerationAdmin(moderation)
    for term in ("lil", "ill", "loli"):
        assert await admin.block_add(member("G1", admin=True), term) is True
    assert await refused(moderation, "a l1l dog", "G1")
    for prompt in HOSTILE:
        assert await refused(moderation, prompt, "G1") is False, prompt[:40]
        took = await check_time(moderation, prompt, "G1")
        assert took < CHECK_BOUND, (prompt[:40], took)


async def test_a_prompt_too_long_to_check_is_refused_before_any_work(
    moderation: Moderation,
) -> None:
    with pytest.raises(InvalidRequestError) as refused_early:
        await moderation.screen(request("x" * (MAX_CHECKED_LENGTH + 1)), member("G1"))
    assert describe(refused_early.value) == (
        f"Sorry, I can't draw that: the prompt is {MAX_CHECKED_LENGTH + 1} characters; "
        f"at most {MAX_CHECKED_LENGTH} can be checked."
    )
    assert await refused(moderation, "fox " * (MAX_CHECKED_LENGTH // 4), "G1") is False


async def test_the_loop_keeps_ticking_while_a_fully_loaded_server_checks_hostile_prompts(
    moderation: Moderation,
) -> None:
    admin = ModerationAdmin(moderation)
    boss = member("G1", admin=True)
    # The most a server may have: MAX_RULES words made of letters that "1" stands for, the
    # backtracking shapes, and patterns up to the complexity budget.
    words = ("".join(t) for n in itertools.count(3) for t in itertools.product("ilo", repeat=n))
    for word in itertools.islice(words, MAX_RULES):
        await admin.block_add(boss, word)
    for pattern in SHAPES:
        await admin.block_add_pattern(boss, pattern)
    added = 0
    for prefix in "jkpquvwxyz":
        try:
            added += await admin.block_add_pattern(boss, prefix + r"\w{0,220}!")
        except InvalidRequestError as full:
            assert "too complex" in full.reason
    assert added >= 8
    # Prompts that miss every rule, so that every rule is searched; and the longest allowed.
    misses = ["1" * 3999 + "x", "l1o" * 1333 + "x", "\u00e9" * 4000, ("l1" * 7 + "x ") * 250]
    misses.append(("1" * 15 + "x ") * (MAX_CHECKED_LENGTH // 17))

    async with LoopLag() as lag:
        checks = [refused(moderation, prompt, "G1") for prompt in misses * 4]
        checks += [refused(moderation, prompt, "G1") for prompt in HOSTILE]
        outcomes = await asyncio.gather(*checks)
    worst = lag.worst

    assert outcomes[: len(misses) * 4] == [False] * (len(misses) * 4)
    # The hostile prompts with an "a" hit (a+)+; the runs of 1s hit no word ("1...1x").
    assert outcomes[len(misses) * 4 :] == ["a" in prompt for prompt in HOSTILE]
    assert worst < LAG_BOUND, f"the event loop was held up for {worst * 1000:.0f} ms"


async def test_the_moderation_benchmark_still_runs() -> None:
    # Not timed: only that each part of bench/moderation.py still produces its figures.
    times, grown, lags = await moderation_bench.measure(
        repeats=1, concurrent=2, re_limit=0.001, words_count=5
    )
    assert len(times) == 4 and times[0].scenario == "built-in list, hostile 4,000"
    assert all(t.seconds for t in times) and all(g.points for g in grown)
    assert [lag.where for lag in lags] == ["moderation thread", "event loop (baseline)"]
    assert "worst lag ms" in moderation_bench.report(times, grown, lags)

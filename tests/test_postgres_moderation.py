"""The moderation store on PostgreSQL, beyond the contract suite (``tests/test_moderation_store.py``
runs that on the "postgres" kind too): several processes on one database, SQLite's order and
audit text whatever the database's locale.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import aiosqlite
import asyncpg
import pytest

from bot.models import ReviewState
from bot.store.database import Store, open_store
from bot.store.moderation import ModerationStore
from tests.fakes import postgres
from tests.fakes.clock import FakeClock
from tests.fakes.process import REPO_ROOT
from tests.ledger_support import open_store_of, request, requester

ACTOR = "discord:boss"
REVIEWS = 12


async def pending_reviews(mod: ModerationStore, count: int) -> list[str]:
    ids = []
    for i in range(count):
        review = await mod.record_refusal(
            request(1, prompt=f"dragon {i}"), requester(), source="filter", rule="term:dragon"
        )
        assert await mod.mark_pending(review.review_id) is not None
        ids.append(review.review_id)
    return ids


async def decisions_audited(store: Store) -> list[str]:
    audit = await store.ledger.audit_log(platform="discord", workspace_id="G1", limit=1000)
    return [a.action for a in audit if a.action in ("approve_review", "deny_review")]


async def test_two_stores_on_two_pools_decide_each_review_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with (
        await open_store_of("postgres", tmp_path, clock=clock) as first,
        await open_store_of("postgres", tmp_path, clock=clock) as second,
    ):
        ids = await pending_reviews(first.moderation, REVIEWS)
        # Every review is decided four times by each store at once, approving and denying.
        attempts = [
            (review_id, store, n)
            for review_id in ids
            for store in (first, second)
            for n in range(4)
        ]
        results = await asyncio.gather(
            *(
                store.moderation.decide(review_id, approve=n % 2 == 0, decided_by=f"admin{n}")
                for review_id, store, n in attempts
            )
        )
        for review_id in ids:
            winners = [
                r for (rid, _, _), r in zip(attempts, results, strict=True) if rid == review_id
            ]
            decided = [r for r in winners if r is not None]
            assert len(decided) == 1
            assert await first.moderation.review(review_id) == decided[0]
            assert await second.moderation.review(review_id) == decided[0]
        assert len(await decisions_audited(first)) == REVIEWS


# A process of its own: opens the store at argv[1], says "ready", waits for "go", then tries
# to decide every review id it read (all at once), and prints the ones it won.
_DECIDER = """
import asyncio, json, sys
from bot.store.database import open_store

async def main():
    url, name = sys.argv[1], sys.argv[2]
    ids = json.loads(sys.stdin.readline())
    async with await open_store(url) as store:
        print("ready", flush=True)
        sys.stdin.readline()
        won = await asyncio.gather(
            *(store.moderation.decide(i, approve=name == "a", decided_by=name) for i in ids)
        )
        print(json.dumps([i for i, r in zip(ids, won) if r is not None]), flush=True)

asyncio.run(main())
"""


@pytest.mark.e2e
async def test_two_processes_deciding_the_same_reviews_decide_each_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    url = postgres.database_url(str(tmp_path))
    async with await open_store(url, clock=clock.utc) as store:
        ids = await pending_reviews(store.moderation, REVIEWS)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _DECIDER,
                url,
                name,
                cwd=REPO_ROOT,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for name in ("a", "b")
        ]
        try:
            for child in children:
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(json.dumps(ids).encode() + b"\n")
                await child.stdin.drain()
                assert await child.stdout.readline() == b"ready\n"
            # Both have their pools open: let them go together.
            for child in children:
                assert child.stdin is not None
                child.stdin.write(b"go\n")
                await child.stdin.drain()
            outputs = [await child.communicate() for child in children]
        finally:
            for child in children:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
        assert [child.returncode for child in children] == [0, 0]
        won_a, won_b = (set(json.loads(out)) for out, _ in outputs)
        assert not won_a & won_b
        assert won_a | won_b == set(ids)
        for review_id in ids:
            review = await store.moderation.review(review_id)
            assert review is not None
            winner = "a" if review_id in won_a else "b"
            state = ReviewState.APPROVED if winner == "a" else ReviewState.DENIED
            assert (review.decided_by, review.state) == (winner, state)
        assert len(await decisions_audited(store)) == REVIEWS


# --- SQLite's behaviour, whatever the database's locale ----------------------------------------


@pytest.fixture
def icu_database(tmp_path: Path) -> Iterator[str]:
    """A database whose default collation is ICU's en-US, as many servers' are: it sorts
    ``apple`` before ``Zebra``, where SQLite (and the C locale) sort by code point."""
    name = "t_icu_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:20]
    postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    postgres.psql(
        f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
        "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    )
    base = postgres.admin_url()
    url = base.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def icu_store(icu_database: str, clock: FakeClock) -> AsyncIterator[Store]:
    async with await open_store(icu_database, clock=clock.utc) as store:
        yield store


async def test_rules_come_back_in_code_point_order_on_any_locale(
    icu_database: str, icu_store: Store
) -> None:
    values = ["apple", "Zebra", "_under", "éclair", "Apple", "zoo", "10", "9"]
    ordered = postgres.psql(
        "SELECT string_agg(v, ',' ORDER BY v) FROM unnest(ARRAY['apple', 'Zebra']) AS v",
        url=icu_database,
    )
    assert ordered.strip() == "apple,Zebra"  # the locale really sorts otherwise
    mod = icu_store.moderation
    for value in values:
        assert await mod.add_rule("discord", "G1", "term", value, actor=ACTOR)
        assert await mod.add_rule("discord", "G1", "channel", value, actor=ACTOR)
    rules = await mod.rules("discord", "G1")
    assert list(rules.blocked_terms) == sorted(values)
    assert list(rules.allowed_channel_ids) == sorted(values)


async def test_the_log_reads_by_time_on_any_locale(icu_store: Store, clock: FakeClock) -> None:
    mod = icu_store.moderation
    start = clock.utc()
    prompts = []
    for i in range(5):
        prompts.append(f"dragon {i}")
        await mod.record_refusal(
            request(1, prompt=prompts[-1]), requester(), source="filter", rule="term:dragon"
        )
        clock.advance(hours=7, seconds=13)
    entries = await mod.log("discord", "G1", since=start)
    assert [e.prompt for e in entries] == prompts[::-1]
    later = await mod.log("discord", "G1", since=start + timedelta(hours=7))
    assert [e.prompt for e in later] == prompts[:0:-1]


async def _moderation_changes(store: Store) -> None:
    mod = store.moderation
    await mod.add_rule("discord", "G1", "term", 'say "hi"', actor=ACTOR)
    await mod.add_rule("discord", "G1", "pattern", r"blood\s*bath", actor=ACTOR)
    await mod.remove_rule("discord", "G1", "term", 'say "hi"', actor=ACTOR)
    await mod.add_rule("discord", "G1", "term", 'say "hi"', actor=ACTOR)
    await mod.add_rule("discord", "G1", "channel", "C5", actor=ACTOR)
    await mod.remove_rule("discord", "G1", "channel", "C5", actor=ACTOR)
    await mod.set_review_channel("discord", "G1", None, actor=ACTOR)
    await mod.set_review_channel("discord", "G1", "C9", actor=ACTOR)
    await mod.set_review_channel("discord", "G1", None, actor=ACTOR)
    await mod.set_spoilers("discord", "G2", True, actor=ACTOR)
    await mod.set_spoilers("discord", "G2", False, actor=ACTOR)
    for approve in (True, False):
        review = await mod.record_refusal(request(2), requester(), source="filter", rule="x")
        await mod.mark_pending(review.review_id)
        await mod.decide(review.review_id, approve=approve, decided_by="boss")


_AUDIT = """
    SELECT at, actor, action, scope_kind, platform, workspace_id, subject_id, old, new
    FROM audit ORDER BY id
"""
_LOG = """
    SELECT at, platform, workspace_id, channel_id, user_id, prompt, negative_prompt, source,
           rule
    FROM moderation_log ORDER BY id
"""


def _without_review_ids(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Review ids are random: the rest of each row must match."""

    def scrub(value: object) -> object:
        if isinstance(value, str) and '"review_id":"' in value:
            head, _, tail = value.partition('"review_id":"')
            return head + '"review_id":"?' + tail[tail.index('"') :]
        return value

    return [tuple(scrub(v) for v in row) for row in rows]


async def test_audit_and_log_rows_are_written_as_sqlite_writes_them(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with await open_store_of("sqlite-file", tmp_path, clock=clock) as lite:
        await _moderation_changes(lite)
    async with aiosqlite.connect(tmp_path / "ledger.db") as db:
        lite_audit = [tuple(r) for r in await db.execute_fetchall(_AUDIT)]
        lite_log = [tuple(r) for r in await db.execute_fetchall(_LOG)]

    url = postgres.database_url(str(tmp_path))
    async with await open_store(url, clock=clock.utc) as pg:
        await _moderation_changes(pg)
    connection = await asyncpg.connect(url)
    try:
        pg_audit = [tuple(r) for r in await connection.fetch(_AUDIT)]
        pg_log = [tuple(r) for r in await connection.fetch(_LOG)]
    finally:
        await connection.close()

    assert len(lite_audit) == 12
    assert _without_review_ids(pg_audit) == _without_review_ids(lite_audit)
    assert pg_log == lite_log

"""``imagine-bot db copy``, ``db backup`` and ``db migrate`` across SQLite and PostgreSQL, run
as the operator runs them (the real command line in a subprocess), on a database filled
through the real ledger and moderation store, checked through ``open_store``."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bot.errors import QuotaExceededError
from bot.models import Limits, Scope, ScopeKind
from bot.store.copy import TABLES
from bot.store.database import Store, open_store
from bot.store.schema import SCHEMA_VERSION as SQLITE_VERSION
from tests.fakes import postgres
from tests.fakes.clock import FakeClock
from tests.ledger_support import request, requester

ROOT = Path(__file__).resolve().parents[1]
ACTOR = "discord:boss"
SECRET = "pa55-word-never-shown"
LAST_MONTH = datetime(2026, 5, 20, 15, tzinfo=UTC)
NOW = datetime(2026, 6, 16, 9, 30, tzinfo=UTC)

ALICE = requester("alice", roles=("artists",))
BOB = requester("bob")
CAROL = requester("carol", roles=("artists",))
DAVE = requester("dave", platform="slack", workspace="T1")


def imagine_bot(
    tmp_path: Path, *argv: str, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def cli(
    tmp_path: Path, *argv: str, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``imagine_bot`` for the async tests: the test's loop is not held while it runs."""
    return await asyncio.to_thread(imagine_bot, tmp_path, *argv, database_url=database_url)


def with_password(url: str) -> str:
    """The test server trusts every local connection, so a password is accepted and unused:
    what matters is that no output ever shows it."""
    parts = urlsplit(url)
    netloc = parts.netloc.replace("postgres@", f"postgres:{SECRET}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def sqlite_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def postgres_counts(url: str) -> dict[str, int]:
    return {t: int(postgres.psql(f"SELECT count(*) FROM {t}", url=url)) for t in TABLES}


def copied_rows(stdout: str) -> dict[str, int]:
    """The per-table lines of ``db copy``'s output."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in TABLES:
            rows[parts[0]] = int(parts[1])
    return rows


@dataclass
class Filled:
    held: str  # a job still held, by a process that stopped
    charged_last_month: str


async def fill(store: Store, clock: FakeClock) -> Filled:
    """A little of everything a running install leaves behind."""
    ledger, mod = store.ledger, store.moderation
    g1 = ("discord", "G1")
    await ledger.set_limits(Scope(ScopeKind.WORKSPACE, *g1), Limits(images_per_day=5), actor=ACTOR)
    await ledger.set_limits(
        Scope(ScopeKind.ROLE, *g1, "artists"), Limits(images_per_day=8), actor=ACTOR
    )
    await ledger.set_limits(
        Scope(ScopeKind.USER, *g1, "alice"),
        Limits(images_per_day=4, usd_micros_per_month=1_000_000),
        actor=ACTOR,
    )
    await ledger.clear_limits(Scope(ScopeKind.USER, *g1, "carol"), actor=ACTOR)
    await ledger.set_limits(
        Scope(ScopeKind.WORKSPACE, "slack", "T1"), Limits(images_per_month=30), actor="slack:U1"
    )
    await ledger.set_spend_cap(
        platform="discord", workspace_id="G1", usd_micros=50_000_000, actor=ACTOR
    )
    await ledger.set_spend_cap(
        platform="discord", workspace_id="G1", usd_micros=40_000_000, actor=ACTOR
    )

    clock.set(LAST_MONTH)
    last = await ledger.hold(requester=ALICE, request=request(2), cost_micros=4_000, event_id="e1")
    await ledger.charge(last.job_id, images=2, cost_micros=4_000)
    gone = await ledger.hold(requester=BOB, request=request(3), cost_micros=9_000, event_id="e2")
    await ledger.refund(gone.job_id, reason="provider_error")
    dave = await ledger.hold(requester=DAVE, request=request(1), cost_micros=3_003)
    await ledger.charge(dave.job_id, images=1, cost_micros=3_003)

    clock.set(NOW)
    part = await ledger.hold(requester=ALICE, request=request(3), cost_micros=6_789, event_id="e3")
    await ledger.charge(part.job_id, images=2, cost_micros=4_526)  # one image failed
    bob = await ledger.hold(requester=BOB, request=request(1), cost_micros=13_000, event_id="e4")
    await ledger.charge(bob.job_id, images=1, cost_micros=13_000)
    held = await ledger.hold(
        requester=ALICE,
        request=request(1, prompt="a koi pond"),
        cost_micros=2_000,
        event_id="e5",
        reach={"channel": "C1"},
    )
    await ledger.hold(requester=CAROL, request=request(2), cost_micros=4_000, event_id="e6")
    await ledger.first_click("alice:reroll:" + part.job_id, window=timedelta(seconds=2))

    await mod.add_rule("discord", "G1", "term", "dragon", actor=ACTOR)
    await mod.add_rule("discord", "G1", "pattern", "fo+x", actor=ACTOR)
    await mod.add_rule("discord", "G1", "channel", "C1", actor=ACTOR)
    await mod.add_rule("discord", "G1", "term", "wyvern", actor=ACTOR)
    await mod.remove_rule("discord", "G1", "term", "wyvern", actor=ACTOR)
    await mod.set_review_channel("discord", "G1", "C9", actor=ACTOR)
    await mod.set_spoilers("discord", "G1", True, actor=ACTOR)
    refused = await mod.record_refusal(request(1), BOB, source="filter", rule="term:dragon")
    asked = await mod.record_refusal(request(2), CAROL, source="endpoint", rule="violence")
    await mod.mark_pending(asked.review_id)
    await mod.decide(asked.review_id, approve=True, decided_by="boss")
    assert refused.review_id != asked.review_id
    return Filled(held=held.job_id, charged_last_month=last.job_id)


async def same_story(source: Store, target: Store) -> None:
    """Everything a user or admin can read from the store reads the same on both."""
    since = datetime(2026, 5, 1, tzinfo=UTC)
    for platform, workspace in ((None, None), ("discord", "G1")):
        before = await source.ledger.usage(since=since, platform=platform, workspace_id=workspace)
        after = await target.ledger.usage(since=since, platform=platform, workspace_id=workspace)
        assert after == before
        assert after.total_micros == before.total_micros
    assert (await target.ledger.usage(since=since)).total_micros == 4_000 + 3_003 + 4_526 + 13_000
    for who in (ALICE, BOB, CAROL, DAVE):
        assert await target.ledger.allowance(who) == await source.ledger.allowance(who)
    assert await target.ledger.audit_log(limit=100) == await source.ledger.audit_log(limit=100)
    assert await target.ledger.spend_cap(platform="discord", workspace_id="G1") == 40_000_000
    assert await target.moderation.rules("discord", "G1") == await source.moderation.rules(
        "discord", "G1"
    )
    since_log = datetime(2026, 1, 1, tzinfo=UTC)
    assert await target.moderation.log("discord", "G1", since=since_log) == (
        await source.moderation.log("discord", "G1", since=since_log)
    )
    assert (await target.ledger.job_stats()) == (await source.ledger.job_stats())


async def test_db_copy_moves_a_populated_sqlite_install_to_postgresql(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "imagine.db"
    source_url = f"sqlite:///{path}"
    target_url = postgres.database_url(f"{tmp_path}-target")
    async with await open_store(source_url, clock=clock.utc) as source:
        filled = await fill(source, clock)
    before = sqlite_counts(path)
    assert all(before[t] > 0 for t in TABLES), before

    done = await cli(
        tmp_path, "db", "copy", "--from", source_url, "--to", with_password(target_url)
    )
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert copied_rows(done.stdout) == before
    assert f"copied {sum(before.values())} row(s) from {path} to " in done.stdout
    assert postgres_counts(target_url) == before
    assert sqlite_counts(path) == before  # the source is read, never written

    async with (
        await open_store(source_url, clock=clock.utc) as source,
        await open_store(target_url, clock=clock.utc) as target,
    ):
        await same_story(source, target)
        held = await target.ledger.job(filled.held)
        assert held.state == (await source.ledger.job(filled.held)).state
        assert held.request.prompt == "a koi pond"
        # The held job keeps its owner (the process that stopped) and its deadline, so the
        # first process on the new database refunds it and tells the member.
        lease = f"SELECT owner, deadline, reach FROM jobs WHERE job_id = '{filled.held}'"
        with sqlite3.connect(path) as db:
            owner, deadline, reach = db.execute(lease).fetchone()
        assert postgres.psql(lease, url=target_url).strip() == f"{owner}|{deadline}|{reach}"

        # Alice has 4 images a day: 2 charged and 1 held today. One more fits, then none:
        # the copied counters count once, not twice (and not zero).
        extra = await target.ledger.hold(requester=ALICE, request=request(1), cost_micros=1)
        with pytest.raises(QuotaExceededError):
            await target.ledger.hold(requester=ALICE, request=request(1), cost_micros=1)
        await target.ledger.refund(extra.job_id, reason="test")
        # A new admin change is audited once, after the copied rows, with the next id.
        await target.ledger.set_limits(
            Scope(ScopeKind.USER, "discord", "G1", "bob"), Limits(images_per_day=1), actor=ACTOR
        )
        newest = (await target.ledger.audit_log(limit=1))[0]
        assert newest.scope.subject_id == "bob"
        assert len(await target.ledger.audit_log(limit=100)) == before["audit"] + 1
        refusal = await target.moderation.record_refusal(
            request(1), BOB, source="filter", rule="term:dragon"
        )
        log = await target.moderation.log("discord", "G1", since=datetime(2026, 1, 1, tzinfo=UTC))
        assert [e.review_id for e in log].count(refusal.review_id) == 1
        assert len(log) == before["moderation_log"] + 1

    again = await cli(
        tmp_path, "db", "copy", "--from", source_url, "--to", with_password(target_url)
    )
    assert again.returncode == 1
    (line,) = again.stderr.strip().splitlines()
    assert "already holds" in line and "job(s)" in line and "nothing was copied" in line
    assert SECRET not in again.stdout + again.stderr
    assert postgres_counts(target_url)["jobs"] == before["jobs"] + 1  # only the test's hold


async def test_a_postgresql_backup_restores_into_a_fresh_database(
    tmp_path: Path, clock: FakeClock
) -> None:
    live = postgres.database_url(f"{tmp_path}-live")
    restored = postgres.database_url(f"{tmp_path}-restored")
    async with await open_store(live, clock=clock.utc) as store:
        await fill(store, clock)
    counts = postgres_counts(live)

    backup = tmp_path / "imagine-backup.db"
    done = await cli(tmp_path, "db", "backup", str(backup), database_url=with_password(live))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"backed up {urlsplit(live).scheme}://postgres@")
    assert SECRET not in done.stdout + done.stderr
    backed_up = sqlite_counts(backup)
    # The backup's own boot (it opened the store) is the one row more.
    assert backed_up == {**counts, "boots": counts["boots"] + 1}
    assert not (tmp_path / f".{backup.name}.partial").exists()

    done = await cli(tmp_path, "db", "copy", "--from", f"sqlite:///{backup}", "--to", restored)
    assert done.returncode == 0, done.stderr
    async with (
        await open_store(live, clock=clock.utc) as source,
        await open_store(restored, clock=clock.utc) as target,
    ):
        await same_story(source, target)

    # A backup never replaces a file.
    again = await cli(tmp_path, "db", "backup", str(backup), database_url=live)
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_db_migrate_brings_either_database_to_the_current_schema(tmp_path: Path) -> None:
    from bot.store.postgres.schema import SCHEMA_VERSION as POSTGRES_VERSION

    path = tmp_path / "new.db"
    done = imagine_bot(tmp_path, "db", "migrate", database_url=f"sqlite:///{path}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{path}: schema version 0 -> {SQLITE_VERSION}\n"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SQLITE_VERSION
        assert db.execute("SELECT count(*) FROM boots").fetchone()[0] == 0  # no boot recorded
    done = imagine_bot(tmp_path, "db", "migrate", "--url", f"sqlite:///{path}")
    assert done.stdout == f"{path}: schema version {SQLITE_VERSION}, already current\n"

    url = postgres.database_url(f"{tmp_path}-migrate")
    shown = url  # the password is left out
    done = imagine_bot(tmp_path, "db", "migrate", "--url", with_password(url))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{shown}: schema version 0 -> {POSTGRES_VERSION}\n"
    done = imagine_bot(tmp_path, "db", "migrate", "--url", with_password(url))
    assert done.stdout == f"{shown}: schema version {POSTGRES_VERSION}, already current\n"
    assert SECRET not in done.stdout + done.stderr
    assert postgres.psql("SELECT count(*) FROM jobs", url=url).strip() == "0"


def test_db_copy_says_in_one_line_what_it_cannot_copy(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.db"
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    done = imagine_bot(tmp_path, "db", "copy", "--from", f"sqlite:///{missing}", "--to", target)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"imagine-bot: there is no database at {missing}; check the path "
        "(sqlite:///relative or sqlite:////abs)"
    ]
    assert not missing.exists()
    done = imagine_bot(tmp_path, "db", "copy", "--from", "sqlite://:memory:", "--to", target)
    assert done.returncode == 1
    assert "in-memory" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = imagine_bot(tmp_path, "db", "copy", "--from", "mysql://u:pw@h/db", "--to", target)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "imagine-bot: a database URL starts with sqlite:// or postgresql:// (got a mysql URL)"
    ]


def test_sqlite_to_sqlite_copy_keeps_the_triggers(tmp_path: Path) -> None:
    """The copy drops the target's triggers for its transaction only: afterwards a new job
    adds to the counters again, and every trigger the schema made is there."""
    source = tmp_path / "a.db"
    target = tmp_path / "b.db"
    assert imagine_bot(tmp_path, "db", "migrate", "--url", f"sqlite:///{source}").returncode == 0
    done = imagine_bot(
        tmp_path, "db", "copy", "--from", f"sqlite:///{source}", "--to", f"sqlite:///{target}"
    )
    assert done.returncode == 0, done.stderr
    assert copied_rows(done.stdout) == dict.fromkeys(TABLES, 0)
    query = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    with sqlite3.connect(source) as a, sqlite3.connect(target) as b:
        assert b.execute(query).fetchall() == a.execute(query).fetchall()
        assert len(b.execute(query).fetchall()) > 5


def test_every_table_of_the_schema_is_copied(tmp_path: Path) -> None:
    """A table added to the schema without a place in ``TABLES`` would be left behind."""
    path = tmp_path / "schema.db"
    assert imagine_bot(tmp_path, "db", "migrate", "--url", f"sqlite:///{path}").returncode == 0
    with sqlite3.connect(path) as db:
        names = {
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    assert names == set(TABLES)


def test_an_older_source_is_migrated_first_not_copied_half(tmp_path: Path) -> None:
    from bot.store.schema import MIGRATIONS

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        for statement in (s for migration in MIGRATIONS[:2] for s in migration):
            db.execute(statement)
        db.execute("PRAGMA user_version = 2")
    target = tmp_path / "new.db"
    copy = ("db", "copy", "--from", f"sqlite:///{old}", "--to", f"sqlite:///{target}")
    done = imagine_bot(tmp_path, *copy)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"imagine-bot: {old} is at schema version 2, this imagine-bot copies version "
        f"{SQLITE_VERSION}: run imagine-bot db migrate --url <its DATABASE_URL> first "
        "(nothing was copied)"
    ]
    assert imagine_bot(tmp_path, "db", "migrate", "--url", f"sqlite:///{old}").stdout == (
        f"{old}: schema version 2 -> {SQLITE_VERSION}\n"
    )
    assert imagine_bot(tmp_path, *copy).returncode == 0

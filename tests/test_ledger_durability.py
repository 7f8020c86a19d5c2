"""What survives on disk: a crash with holds outstanding, a restart, schema versions, backups."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.errors import ConfigError, QuotaExceededError
from bot.models import JobState, Limits, Scope, ScopeKind
from bot.store.ledger import SqliteLedger
from bot.store.schema import SCHEMA_VERSION
from tests.fakes.clock import FakeClock
from tests.ledger_support import request, requester

ROOT = Path(__file__).resolve().parents[1]

# Holds three jobs in a real process, says so, then waits to be killed.
_CRASHING_BOT = textwrap.dedent(
    """
    import asyncio, sys
    from bot.store.ledger import SqliteLedger
    from bot.models import GenerationRequest, Limits, Requester

    async def main() -> None:
        ledger = await SqliteLedger.open(sys.argv[1], defaults=Limits(images_per_day=5))
        who = Requester("discord", "G1", "C1", "alice")
        ids = []
        for i in range(3):
            job = GenerationRequest(prompt=f"fox {i}", model="stability/sdxl", size="1024x1024")
            hold = await ledger.hold(requester=who, request=job, cost_micros=2000,
                                     event_id=f"evt-{i}")
            ids.append(hold.job_id)
        print("held", *ids, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())
    """
)


def _run_and_kill(db: Path, while_alive: Callable[[], None] = lambda: None) -> list[str]:
    """Start the child, wait for its "held" line, call ``while_alive``, SIGKILL the child;
    return the job ids it held."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", _CRASHING_BOT, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        line = child.stdout.readline()
        if not line.startswith("held "):
            child.kill()
            pytest.fail(f"the child did not hold: {line!r} {child.stderr.read()}")
        try:
            while_alive()
        finally:
            child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    return line.split()[1:]


async def test_a_killed_process_leaves_no_hold_behind(tmp_path: Path) -> None:
    db = tmp_path / "imagine.db"
    job_ids = _run_and_kill(db)
    assert len(job_ids) == 3

    clock = FakeClock(utc=datetime.now(UTC))
    ledger = await SqliteLedger.open(db, defaults=Limits(images_per_day=5), clock=clock.utc)
    try:
        # The crashed process's holds are on disk and still count ...
        assert {(await ledger.job(j)).state for j in job_ids} == {JobState.HELD}
        usage = (await ledger.allowance(requester())).get("images_per_day")
        assert usage is not None and usage.used == 3
        # ... but its process is gone, so they are refunded at once, not after the job timeout.
        assert await ledger.refund_orphans() == 3
        for job_id in job_ids:
            record = await ledger.job(job_id)
            assert record.state is JobState.REFUNDED
            assert record.refund_reason == "interrupted"
        usage = (await ledger.allowance(requester())).get("images_per_day")
        assert usage is not None and usage.used == 0
        # The whole daily allowance is usable again; the event ids still deduplicate.
        again = await ledger.hold(
            requester=requester(), request=request(1), cost_micros=0, event_id="evt-0"
        )
        assert again.duplicate and again.job_id == job_ids[0]
        await ledger.hold(requester=requester(), request=request(4), cost_micros=0)
        await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
        with pytest.raises(QuotaExceededError):
            await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
    finally:
        await ledger.close()


def test_a_sweep_by_another_process_leaves_a_running_process_alone(tmp_path: Path) -> None:
    """A one-off command (or a second bot) with a 10-second job timeout sweeps while the bot
    holds three jobs: none is touched; once the bot is killed, all three are refunded."""
    db = tmp_path / "imagine.db"

    async def sweep() -> int:
        async with await SqliteLedger.open(db, job_timeout=timedelta(seconds=10)) as ledger:
            return await ledger.refund_orphans()

    swept: list[int] = []
    _run_and_kill(db, while_alive=lambda: swept.append(asyncio.run(sweep())))
    assert swept == [0]
    assert asyncio.run(sweep()) == 3


async def test_a_job_reads_back_in_full_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "imagine.db"
    ledger = await SqliteLedger.open(db)
    who = requester("alice", roles=("R1",))
    hold = await ledger.hold(requester=who, request=request(2), cost_micros=4_000, event_id="e")
    await ledger.charge(hold.job_id, images=2, cost_micros=4_000)
    await ledger.set_limits(
        Scope(ScopeKind.USER, "discord", "G1", "alice"), Limits(images_per_day=7), actor="t"
    )
    before = await ledger.job(hold.job_id)
    await ledger.close()

    reopened = await SqliteLedger.open(db)
    try:
        after = await reopened.job(hold.job_id)
        assert after == before
        assert after.requester == who
        assert after.request == request(2)
        assert await reopened.limits(Scope(ScopeKind.USER, "discord", "G1", "alice")) == Limits(
            images_per_day=7
        )
    finally:
        await reopened.close()


async def test_the_file_is_in_wal_mode_at_the_current_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "imagine.db"
    ledger = await SqliteLedger.open(db)
    await ledger.close()
    ledger = await SqliteLedger.open(db)  # a second open migrates nothing
    await ledger.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"jobs", "limits", "spend_caps", "audit"} <= tables


async def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "imagine.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this imagine-bot"):
        await SqliteLedger.open(db)


def _backup_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("copy", ".copy")))


async def test_a_backup_is_a_complete_usable_copy(tmp_path: Path) -> None:
    ledger = await SqliteLedger.open(tmp_path / "live.db")
    try:
        hold = await ledger.hold(requester=requester(), request=request(1), cost_micros=2_000)
        await ledger.charge(hold.job_id, images=1, cost_micros=2_000)
        await ledger.set_spend_cap(platform="discord", workspace_id="G1", usd_micros=9, actor="t")
        await ledger.backup(tmp_path / "copy.db")
        # The live ledger keeps working after the backup.
        await ledger.hold(requester=requester(), request=request(1), cost_micros=0)
    finally:
        await ledger.close()
    assert _backup_files(tmp_path) == ["copy.db"]  # no partial file left behind
    copy = await SqliteLedger.open(tmp_path / "copy.db")
    try:
        assert (await copy.job(hold.job_id)).state is JobState.CHARGED
        assert await copy.spend_cap(platform="discord", workspace_id="G1") == 9
        report = await copy.usage(since=datetime(2000, 1, 1, tzinfo=UTC))
        assert (report.total_images, report.total_micros) == (1, 2_000)
    finally:
        await copy.close()

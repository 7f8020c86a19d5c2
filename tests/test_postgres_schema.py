"""PostgreSQL migrations (``bot.store.postgres.schema``): run once however many processes open
a new database together, a no-op on reopening, and a database newer than the code stops
start-up with what to do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.models import Limits, Scope, ScopeKind
from bot.store.database import open_store
from bot.store.postgres.schema import SCHEMA_VERSION
from tests.fakes import postgres
from tests.ledger_support import request, requester


def version_rows(url: str) -> list[str]:
    return postgres.psql("SELECT version FROM schema_version", url=url).split()


async def test_stores_opened_together_on_a_new_database_migrate_it_once(tmp_path: Path) -> None:
    url = postgres.database_url(str(tmp_path))
    stores = await asyncio.gather(
        *(open_store(url, defaults=Limits(images_per_day=3)) for _ in range(4))
    )
    try:
        # Every store works on the one schema: holds from each count against one limit.
        holds = [
            await store.ledger.hold(requester=requester(), request=request(1), cost_micros=0)
            for store in stores[:3]
        ]
        assert len({h.job_id for h in holds}) == 3
        usage = (await stores[3].ledger.allowance(requester())).get("images_per_day")
        assert usage is not None and usage.remaining == 0
    finally:
        for store in stores:
            await store.close()
    assert version_rows(url) == [str(SCHEMA_VERSION)]


async def test_reopening_keeps_the_data_and_migrates_nothing(tmp_path: Path) -> None:
    url = postgres.database_url(str(tmp_path))
    async with await open_store(url) as store:
        hold = await store.ledger.hold(requester=requester(), request=request(2), cost_micros=0)
    async with await open_store(url) as again:
        assert (await again.ledger.job(hold.job_id)).held_images == 2
        # The first process closed cleanly: its hold is an orphan at once.
        assert await again.ledger.refund_orphans() == 1
    assert version_rows(url) == [str(SCHEMA_VERSION)]


async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    url = postgres.database_url(str(tmp_path))
    async with await open_store(url):
        pass
    postgres.psql(f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}", url=url)
    with pytest.raises(ConfigError) as caught:
        await open_store(url)
    assert str(caught.value) == (
        f"the database is at schema version {SCHEMA_VERSION + 1}, newer than this imagine-bot "
        f"(version {SCHEMA_VERSION}); upgrade imagine-bot or restore a backup"
    )


async def test_the_tables_have_sqlites_names_so_a_copy_goes_table_by_table(
    tmp_path: Path,
) -> None:
    url = postgres.database_url(str(tmp_path))
    async with await open_store(url) as store:
        alice = Scope(ScopeKind.USER, "discord", "G1", "alice")
        await store.ledger.set_limits(alice, Limits(images_per_day=5), actor="cli:root")
    tables = set(
        postgres.psql(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()", url=url
        ).split()
    )
    assert {
        "jobs",
        "usage_counters",
        "workspace_counters",
        "limits",
        "spend_caps",
        "audit",
        "boots",
        "clicks",
    } <= tables
    # JSON is stored as SQLite's json_object writes it, so copied rows compare equal.
    assert postgres.psql("SELECT new FROM audit", url=url).strip() == (
        '{"images_per_day":5,"images_per_month":null,"usd_micros_per_month":null}'
    )

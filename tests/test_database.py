"""Opening the store for a ``DATABASE_URL`` (``bot.store.database``): one place picks the
backend, and a URL none takes stops start-up with what to write instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.store.database import open_store


@pytest.mark.parametrize(
    ("url", "scheme"),
    [("mysql://bot:secret@db/imagine", "mysql"), ("data/imagine.db", "data/imagine.db")],
)
async def test_a_url_no_backend_takes_is_a_config_error(url: str, scheme: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await open_store(url)
    assert str(caught.value) == (
        "DATABASE_URL must start with sqlite:// or postgresql:// or postgres:// "
        f"(got a {scheme} URL)"
    )
    assert "secret" not in str(caught.value)


async def test_a_sqlite_url_opens_both_stores_on_one_database(tmp_path: Path) -> None:
    path = tmp_path / "imagine.db"
    async with await open_store(f"sqlite:///{path}") as store:
        assert store.ledger.location == str(path)
        await store.moderation.add_rule("discord", "G1", "term", "dragon", actor="cli:root")
        (entry,) = await store.ledger.audit_log()  # one database: the ledger sees the change
        assert entry.action == "block_term"
    async with await open_store(f"sqlite:///{path}") as again:
        assert (await again.moderation.rules("discord", "G1")).blocked_terms == ("dragon",)

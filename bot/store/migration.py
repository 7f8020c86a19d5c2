"""The forward-migration loop of every backend's schema (``bot.store.schema``,
``bot.store.postgres.schema``): each brings its DDL, its transaction and where it keeps the
version number; the order, the refusal of a newer database and the log line are these."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from bot.errors import ConfigError
from bot.messages import database_newer_text

__all__ = ["apply"]

log = logging.getLogger(__name__)


async def apply(
    migrations: Sequence[Sequence[str]],
    current: int,
    *,
    execute: Callable[[str], Awaitable[object]],
    set_version: Callable[[int], Awaitable[object]],
) -> None:
    """Run ``migrations[current:]`` in order, each followed by ``set_version`` with the version
    it reaches, inside the caller's transaction. A database at a version newer than all of
    them (written by a later imagine-bot) is refused with a ``ConfigError``, untouched."""
    latest = len(migrations)
    if current > latest:
        raise ConfigError(database_newer_text(current, latest))
    for version in range(current, latest):
        for statement in migrations[version]:
            await execute(statement)
        await set_version(version + 1)
        log.info("ledger schema migrated to version %d", version + 1)

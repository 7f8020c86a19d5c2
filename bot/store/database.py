"""Opening the store for a ``DATABASE_URL``: the one place that knows which backends exist.

``open_store`` returns a ``Store``: the ledger and the moderation store of one database, typed
by their protocols (``bot.store.ledger.Ledger``, ``bot.store.moderation.ModerationStore``).
Nothing outside ``bot/store/`` names a backend class, so a second backend (PostgreSQL) is one
more entry in ``_BACKENDS`` and its two classes, and the contract suite
(``tests/test_ledger.py``, ``tests/test_moderation_store.py``) gains one parameter.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bot.config import sqlite_path
from bot.directory import probe_directory
from bot.errors import ConfigError
from bot.messages import database_path_text
from bot.models import Limits
from bot.store.closing import Closing
from bot.store.lease import LEASE
from bot.store.ledger import DEFAULT_JOB_TIMEOUT, Clock, Ledger, SqliteLedger
from bot.store.moderation import ModerationStore, SqliteModerationStore
from bot.store.postgres.ledger import PostgresLedger
from bot.store.postgres.moderation import PostgresModerationStore
from bot.store.postgres.queue import PostgresQueue

__all__ = ["Store", "open_store"]


@dataclass(frozen=True, slots=True)
class Store(Closing):
    """One open database. ``close`` once, when the process stops (``async with`` does it)."""

    ledger: Ledger
    moderation: ModerationStore
    # The job queue every process shares, on a database that has one (PostgreSQL);
    # ``None`` on SQLite, where each process queues its own jobs (``bot.scheduler``).
    queue: PostgresQueue | None = None

    async def close(self) -> None:
        # The moderation store shares the ledger's connection (or pool): closing the ledger
        # closes the database.
        await self.ledger.close()


@dataclass(frozen=True, slots=True)
class _Options:
    defaults: Limits
    clock: Clock | None
    job_timeout: timedelta
    lease: timedelta


_Opener = Callable[[str, _Options], Awaitable[Store]]


async def open_store(
    database_url: str,
    *,
    defaults: Limits | None = None,
    clock: Clock | None = None,
    job_timeout: timedelta = DEFAULT_JOB_TIMEOUT,
    lease: timedelta = LEASE,
) -> Store:
    """Open (creating and migrating as needed) the database at ``database_url`` and record
    this process's boot. ``defaults`` are the global limits (from the environment); ``clock``
    returns the current aware UTC time (tests inject one). Raises ``ConfigError`` for a URL
    no backend takes or a database that cannot be opened."""
    options = _Options(
        defaults=defaults or Limits(), clock=clock, job_timeout=job_timeout, lease=lease
    )
    scheme = database_url.split(":", 1)[0]
    opener = _BACKENDS.get(scheme.lower())
    if opener is None:
        accepted = " or ".join(f"{name}://" for name in _BACKENDS)
        raise ConfigError(f"DATABASE_URL must start with {accepted} (got a {scheme} URL)")
    return await opener(database_url, options)


async def _open_sqlite(database_url: str, options: _Options) -> Store:
    path = sqlite_path(database_url)
    if path != ":memory:":
        await asyncio.to_thread(_check_database_path, Path(path))
    try:
        ledger = await SqliteLedger.open(
            path,
            defaults=options.defaults,
            clock=options.clock,
            job_timeout=options.job_timeout,
            lease=options.lease,
        )
    except sqlite3.Error as exc:  # e.g. a file that is not a database
        raise ConfigError(f"cannot open the database {path}: {exc}") from None
    return Store(ledger=ledger, moderation=SqliteModerationStore.on(ledger))


async def _open_postgres(database_url: str, options: _Options) -> Store:
    ledger = await PostgresLedger.open(
        database_url,
        defaults=options.defaults,
        clock=options.clock,
        job_timeout=options.job_timeout,
        lease=options.lease,
    )
    return Store(
        ledger=ledger,
        moderation=PostgresModerationStore.on(ledger),
        queue=PostgresQueue(ledger.pool, lambda: ledger.boot_id),
    )


_BACKENDS: dict[str, _Opener] = {
    "sqlite": _open_sqlite,
    "postgresql": _open_postgres,
    "postgres": _open_postgres,
}


def _check_database_path(path: Path) -> None:
    """SQLite would fail later with a bare ``OperationalError`` (and no hint about uid 10001
    under Docker); the journal and WAL files need the directory writable too."""
    directory = path.absolute().parent
    try:
        probe_directory(directory)
    except OSError as exc:
        blocked_at = exc.filename if exc.filename != str(directory) else None
        text = database_path_text(str(directory), exc, uid=os.geteuid(), blocked_at=blocked_at)
        raise ConfigError(text) from None
    try:
        with path.open("r+b"):
            pass
    except FileNotFoundError:
        pass  # created by SQLite in the directory just checked
    except OSError as exc:
        raise ConfigError(
            database_path_text(str(path.absolute()), exc, uid=os.geteuid(), is_file=True)
        ) from None

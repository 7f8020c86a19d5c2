"""Moving a whole database between ``DATABASE_URL``\\ s, and migrating one: ``imagine-bot db
copy``, ``db backup`` of a PostgreSQL database (a copy into a new SQLite file) and ``db
migrate``.

The two backends have the same tables with the same columns (``bot.store.schema``,
``bot.store.postgres.schema``), so a copy goes table by table, in ``TABLES`` order (a job's
``owner`` is a boot, a log row's ``review_id`` a review), streaming ``BATCH`` rows at a time:

- the source is read in one snapshot (SQLite: a read transaction on a read-only connection;
  PostgreSQL: ``REPEATABLE READ, READ ONLY``), so a copy taken while the bot runs is
  consistent, and the source is never written;
- the target is migrated to the current schema, then written in one transaction that either
  commits every row or none. It must be empty (it may only hold the boots of processes that
  opened it): a second copy into the same target is refused, not merged.

The counters (``usage_counters``, ``workspace_counters``) and the audit and moderation log are
copied as the rows they are, with the target's triggers off for the copy: a copied job adding
to the counters again, or a copied limit writing a second audit row, would count twice. On
SQLite the triggers are dropped and re-created inside the copy's transaction; on PostgreSQL
``ALTER TABLE ... DISABLE TRIGGER USER`` does it inside the transaction (the table owner may,
where ``session_replication_role`` needs a superuser), and the identity sequences of ``audit``
and ``moderation_log`` are moved past the copied ids before it commits.

Tables only PostgreSQL has (the cluster job queue) are not copied: what they hold is the
running processes' work, which a stopped install does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import aiosqlite

from bot.config import sqlite_path
from bot.errors import ConfigError
from bot.messages import (
    COPY_IN_MEMORY,
    copy_columns_missing_text,
    copy_failed_text,
    copy_not_empty_text,
    copy_source_version_text,
    copy_table_missing_text,
    database_url_scheme_text,
    no_database_text,
)
from bot.store import schema as sqlite_schema

if TYPE_CHECKING:
    from bot.store.postgres.connection import Pool

__all__ = ["BATCH", "TABLES", "Copied", "Migration", "backup_postgres", "copy", "migrate"]

log = logging.getLogger(__name__)

TABLES: tuple[str, ...] = (
    "boots",
    "jobs",
    "usage_counters",
    "workspace_counters",
    "limits",
    "spend_caps",
    "audit",
    "moderation_rules",
    "moderation_settings",
    "reviews",
    "moderation_log",
    "clicks",
)
"""Every table of the shared schema, each after the tables its rows name."""

# The rows of a target that processes merely opening it write: they never collide with the
# copied ones (boot ids are random), so they do not make the target "not empty".
_OPENED_ONLY = frozenset({"boots"})

BATCH = 1000
"""Rows read and written per round trip: the copy holds no more than this in memory."""

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Migration:
    """What ``migrate`` did: the schema version it found and the one the database is at."""

    location: str
    found: int
    reached: int


@dataclass(frozen=True, slots=True)
class Copied:
    """What ``copy`` did: the rows written per table, in ``TABLES`` order."""

    source: str
    target: str
    rows: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(count for _, count in self.rows)


class _Database(Protocol):
    """One side of a copy, on either backend."""

    @property
    def location(self) -> str:
        """Where it is, for messages: a path, or a URL without its password."""
        ...

    @property
    def latest(self) -> int:
        """The schema version this imagine-bot writes on this backend."""
        ...

    async def version(self) -> int: ...

    async def migrate(self) -> int:
        """Bring the schema up to ``latest``; the version found."""
        ...

    def snapshot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A read-only transaction: every read inside sees one moment."""
        ...

    def loading(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A write transaction with the triggers off, committed when the block ends."""
        ...

    async def columns(self, table: str) -> tuple[str, ...]:
        """The table's columns in order; empty when there is no such table."""
        ...

    def rows(self, table: str, columns: Sequence[str]) -> AsyncIterator[list[Row]]: ...

    async def count(self, table: str) -> int: ...

    async def load(self, table: str, columns: Sequence[str], rows: list[Row]) -> None: ...

    async def close(self) -> None: ...


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- SQLite --------------------------------------------------------------------------------


class _Sqlite:
    latest = sqlite_schema.SCHEMA_VERSION

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self._db = db
        self._path = path

    @classmethod
    async def open(cls, path: str, *, source: bool) -> _Sqlite:
        """A connection on ``path``: read-only for a source (which must exist), created if
        needed for a target."""
        if path == ":memory:":
            raise ConfigError(COPY_IN_MEMORY)
        address = path
        if source:
            # mode=ro: whatever goes wrong, the source file is never written (nor created).
            address = await asyncio.to_thread(_read_only_uri, path)
        try:
            db = await aiosqlite.connect(address, uri=source, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the database {path}: {exc}") from None
        return cls(db, path)

    @property
    def location(self) -> str:
        return self._path

    async def version(self) -> int:
        rows = list(await self._db.execute_fetchall("PRAGMA user_version"))
        return int(rows[0][0])

    async def migrate(self) -> int:
        return await sqlite_schema.migrate(self._db)

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        await self._db.execute("BEGIN")
        try:
            yield
        finally:
            await self._db.execute("ROLLBACK")

    @contextlib.asynccontextmanager
    async def loading(self) -> AsyncIterator[None]:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            # SQLite cannot switch a trigger off: drop them and create them again, in the
            # same transaction, so no one ever sees the tables without them.
            triggers = list(
                await self._db.execute_fetchall(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
                )
            )
            for name, _ in triggers:
                await self._db.execute(f"DROP TRIGGER {_quoted(str(name))}")
            yield
            for _, sql in triggers:
                await self._db.execute(str(sql))
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise

    async def columns(self, table: str) -> tuple[str, ...]:
        rows = await self._db.execute_fetchall(f"PRAGMA table_info({_quoted(table)})")
        return tuple(str(row[1]) for row in rows)

    async def rows(self, table: str, columns: Sequence[str]) -> AsyncIterator[list[Row]]:
        names = ", ".join(_quoted(c) for c in columns)
        async with self._db.execute(f"SELECT {names} FROM {_quoted(table)}") as cursor:
            while batch := await cursor.fetchmany(BATCH):
                yield [tuple(row) for row in batch]

    async def count(self, table: str) -> int:
        rows = list(await self._db.execute_fetchall(f"SELECT count(*) FROM {_quoted(table)}"))
        return int(rows[0][0])

    async def load(self, table: str, columns: Sequence[str], rows: list[Row]) -> None:
        names = ", ".join(_quoted(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        try:
            await self._db.executemany(
                f"INSERT INTO {_quoted(table)} ({names}) VALUES ({marks})", rows
            )
        except sqlite3.Error as exc:
            raise ConfigError(copy_failed_text(table, self.location, str(exc))) from None

    async def close(self) -> None:
        await self._db.close()


def _read_only_uri(path: str) -> str:
    if not os.path.isfile(path):
        raise ConfigError(no_database_text(path))
    return f"{Path(path).absolute().as_uri()}?mode=ro"


# --- PostgreSQL ----------------------------------------------------------------------------


class _PgTransaction(Protocol):
    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> bool | None: ...


class _PgConnection(Protocol):
    """The asyncpg connection methods a copy uses beyond ``connection.Connection``'s."""

    async def execute(self, query: str, *args: Any) -> str: ...

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False
    ) -> _PgTransaction: ...

    def cursor(self, query: str, *args: Any, prefetch: int | None = None) -> AsyncIterator[Any]: ...

    async def copy_records_to_table(
        self, table_name: str, *, records: Sequence[Row], columns: Sequence[str]
    ) -> str: ...


class _Postgres:
    def __init__(self, pool: Pool, location: str, *, owned: bool) -> None:
        from bot.store.postgres import schema

        self._pool = pool
        self._location = location
        self._owned = owned
        self._schema = schema
        self._stack = contextlib.AsyncExitStack()
        self._connection: _PgConnection | None = None

    @classmethod
    async def open(cls, url: str) -> _Postgres:
        from bot.store.postgres.connection import open_pool, redact_url

        # Two: ``migrate`` takes a connection of its own while the copy holds one.
        pool = await open_pool(url, min_size=1, max_size=2)
        return cls(pool, redact_url(url), owned=True)

    @property
    def location(self) -> str:
        return self._location

    @property
    def latest(self) -> int:
        return self._schema.SCHEMA_VERSION

    async def _borrowed(self) -> _PgConnection:
        if self._connection is None:
            connection = await self._stack.enter_async_context(self._pool.acquire())
            # asyncpg is untyped: its connection is typed here, once, by what a copy calls.
            self._connection = cast(_PgConnection, connection)
        return self._connection

    async def version(self) -> int:
        connection = await self._borrowed()
        if await connection.fetchval("SELECT to_regclass('schema_version')") is None:
            return 0
        found = await connection.fetchval("SELECT version FROM schema_version")
        return 0 if found is None else int(found)

    async def migrate(self) -> int:
        found: int = await self._schema.migrate(self._pool)
        return found

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        connection = await self._borrowed()
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            yield

    @contextlib.asynccontextmanager
    async def loading(self) -> AsyncIterator[None]:
        connection = await self._borrowed()
        async with connection.transaction():
            tables = [t for t in TABLES if await self.columns(t)]
            # USER triggers only: the foreign keys' own triggers keep checking every row.
            for table in tables:
                await connection.execute(f"ALTER TABLE {_quoted(table)} DISABLE TRIGGER USER")
            yield
            for table in tables:
                await self._restart_sequences(connection, table)
                await connection.execute(f"ALTER TABLE {_quoted(table)} ENABLE TRIGGER USER")

    async def _restart_sequences(self, connection: _PgConnection, table: str) -> None:
        """Copied ids were written as given: the next id the database makes follows them."""
        for column in await self.columns(table):
            sequence = await connection.fetchval(
                "SELECT pg_get_serial_sequence($1, $2)", _quoted(table), column
            )
            if sequence is None:
                continue
            await connection.execute(
                f"SELECT setval($1, coalesce(max({_quoted(column)}), 0) + 1, false) "
                f"FROM {_quoted(table)}",
                sequence,
            )

    async def columns(self, table: str) -> tuple[str, ...]:
        connection = await self._borrowed()
        rows = await connection.fetch(
            """
            SELECT column_name FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = $1
            ORDER BY ordinal_position
            """,
            table,
        )
        return tuple(str(row[0]) for row in rows)

    async def rows(self, table: str, columns: Sequence[str]) -> AsyncIterator[list[Row]]:
        connection = await self._borrowed()
        names = ", ".join(_quoted(c) for c in columns)
        batch: list[Row] = []
        async for record in connection.cursor(
            f"SELECT {names} FROM {_quoted(table)}", prefetch=BATCH
        ):
            batch.append(tuple(record))
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    async def count(self, table: str) -> int:
        connection = await self._borrowed()
        return int(await connection.fetchval(f"SELECT count(*) FROM {_quoted(table)}"))

    async def load(self, table: str, columns: Sequence[str], rows: list[Row]) -> None:
        import asyncpg

        connection = await self._borrowed()
        try:
            # COPY writes the given ids into identity columns too, as a copy must.
            await connection.copy_records_to_table(table, records=rows, columns=list(columns))
        except (asyncpg.PostgresError, asyncpg.DataError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(copy_failed_text(table, self.location, reason)) from None

    async def close(self) -> None:
        await self._stack.aclose()
        self._connection = None
        if self._owned:
            await self._pool.close()


# --- opening either ------------------------------------------------------------------------


async def _open(url: str, *, source: bool) -> _Database:
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return await _Postgres.open(url)
    if scheme != "sqlite":
        raise ConfigError(database_url_scheme_text(scheme))
    return await _Sqlite.open(sqlite_path(url), source=source)


async def migrate(url: str) -> Migration:
    """Bring the database at ``url`` to the current schema (creating a SQLite file that is not
    there yet), without recording a boot or touching a row."""
    database = await _open(url, source=False)
    try:
        found = await database.migrate()
        return Migration(location=database.location, found=found, reached=database.latest)
    finally:
        await database.close()


async def copy(source_url: str, target_url: str) -> Copied:
    """Copy every row of ``source_url`` into ``target_url`` (see the module docstring);
    ``ConfigError`` with one line of explanation when it cannot, nothing written then."""
    source = await _open(source_url, source=True)
    try:
        target = await _open(target_url, source=False)
        try:
            return await _copy(source, target)
        finally:
            await target.close()
    finally:
        await source.close()


async def backup_postgres(pool: Pool, target: str | os.PathLike[str], *, location: str) -> None:
    """A consistent copy of the PostgreSQL database of ``pool`` in a new SQLite file at
    ``target``, which ``db copy --from sqlite:///FILE --to postgresql://...`` restores.
    Written under a temporary name first, then renamed into place."""
    final = Path(target)
    partial = final.with_name(f".{final.name}.partial")
    await asyncio.to_thread(partial.unlink, missing_ok=True)
    source = _Postgres(pool, location, owned=False)
    try:
        copy_target = await _Sqlite.open(str(partial), source=False)
        try:
            copied = await _copy(source, copy_target)
        finally:
            await copy_target.close()
    except BaseException:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        raise
    finally:
        await source.close()
    await asyncio.to_thread(os.replace, partial, final)
    log.info("backed up %d row(s) of %s to %s", copied.total, location, final)


async def _copy(source: _Database, target: _Database) -> Copied:
    found = await source.version()
    if found != source.latest:
        raise ConfigError(copy_source_version_text(source.location, found, source.latest))
    await target.migrate()
    counts: list[tuple[str, int]] = []
    async with source.snapshot(), target.loading():
        for table in TABLES:
            present = await target.count(table) if await target.columns(table) else 0
            if present and table not in _OPENED_ONLY:
                raise ConfigError(copy_not_empty_text(target.location, table, present))
        for table in TABLES:
            counts.append((table, await _copy_table(source, target, table)))
    log.info(
        "copied %d row(s) from %s to %s",
        sum(c for _, c in counts),
        source.location,
        target.location,
    )
    return Copied(source=source.location, target=target.location, rows=tuple(counts))


async def _copy_table(source: _Database, target: _Database, table: str) -> int:
    columns = await source.columns(table)
    wanted = await target.columns(table)
    if not columns:
        raise ConfigError(copy_table_missing_text(table, source.location))
    if not wanted:
        raise ConfigError(copy_table_missing_text(table, target.location))
    missing = [c for c in columns if c not in wanted]
    if missing:
        raise ConfigError(copy_columns_missing_text(table, missing, target.location))
    copied = 0
    async for batch in source.rows(table, columns):
        await target.load(table, columns, batch)
        copied += len(batch)
    return copied

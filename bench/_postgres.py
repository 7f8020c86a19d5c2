"""The PostgreSQL server the PostgreSQL benchmarks run on, and a fresh database on it.

``--url`` names a server's admin database (``postgresql://user@host:port/postgres``); without
it, ``IMAGINE_TEST_POSTGRES`` (the tests' server) is used, and without that a throw-away
server is started as the tests start theirs (``tests.fakes.postgres.start_server``: fsync,
synchronous commits and full-page writes off, which is what the figures then measure). Each
benchmark runs in a database of its own, dropped afterwards. URLs are never printed: they may
hold a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench import _support  # noqa: F401  (puts the repository on sys.path)
from tests.fakes.postgres import start_server, stop_server

__all__ = ["database", "describe", "server"]

_ENV = "IMAGINE_TEST_POSTGRES"
# The server settings that decide what a commit costs, printed with the figures.
_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "shared_buffers",
    "max_connections",
)


@contextlib.asynccontextmanager
async def server(url: str | None = None) -> AsyncIterator[str]:
    """An admin URL: ``url``, the tests' server, or a throw-away server started here."""
    found = url or os.environ.get(_ENV)
    if found:
        yield found
        return
    directory = Path(tempfile.mkdtemp(prefix="imagine-bench-pg-"))
    admin, data = await asyncio.to_thread(_start, directory)
    try:
        yield admin
    finally:
        await asyncio.to_thread(stop_server, data)
        shutil.rmtree(directory, ignore_errors=True)


def _start(directory: Path) -> tuple[str, Path]:
    directory.chmod(0o755)  # the server may run as the postgres user
    return start_server(directory)


@contextlib.asynccontextmanager
async def database(admin: str, prefix: str = "bench") -> AsyncIterator[str]:
    """A new, empty database on the server of ``admin``; yields its URL, drops it after."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    try:
        yield urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()


async def describe(url: str) -> str:
    """One line: the server's version and the settings that decide what a commit costs."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        version = await conn.fetchval("SHOW server_version")
        values = [f"{name}={await conn.fetchval(f'SHOW {name}')}" for name in _SETTINGS]
    finally:
        await conn.close()
    return f"PostgreSQL {version} ({', '.join(values)})"

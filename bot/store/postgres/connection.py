"""Opening the asyncpg pool of a ``postgresql://`` URL, and naming the server without its
password.

asyncpg is an optional dependency (``imagine-bot[postgres]``): it is imported only when a
PostgreSQL URL is opened, so a SQLite install never needs it. asyncpg ships no types; the
``Pool`` and ``Connection`` protocols below type the part of it the stores use, and its rows
(``asyncpg.Record``) stay ``Any``.
"""

from __future__ import annotations

import socket
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from bot.errors import ConfigError
from bot.messages import POSTGRES_DRIVER_MISSING, postgres_unreachable_text

__all__ = [
    "CONNECT_TIMEOUT",
    "Connection",
    "Pool",
    "Transaction",
    "open_pool",
    "redact_url",
    "server_of",
]

# A server that does not answer stops start-up after this long, with a message, instead of
# asyncpg's default of a minute.
CONNECT_TIMEOUT = 10.0

_DEFAULT_PORT = 5432
# Query parameters libpq (and so asyncpg) reads a secret from.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


class Transaction(Protocol):
    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> bool | None: ...


class Connection(Protocol):
    """The asyncpg connection methods the stores use."""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str: ...

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]: ...

    async def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> Any | None: ...

    async def fetchval(self, query: str, *args: Any, timeout: float | None = None) -> Any: ...

    def transaction(self, *, isolation: str | None = None) -> Transaction: ...


class Pool(Connection, Protocol):
    """An ``asyncpg.Pool``: each call borrows a connection for one statement."""

    def acquire(self) -> AbstractAsyncContextManager[Connection]: ...

    async def close(self) -> None: ...


def server_of(url: str) -> tuple[str, int, str]:
    """The host, port and database a URL names (libpq's defaults where it names none)."""
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORT
    except ValueError:
        raise ConfigError("DATABASE_URL has a port that is not a number") from None
    user = unquote(parts.username or "") or "postgres"
    database = unquote(parts.path.lstrip("/")) or user
    return parts.hostname or "localhost", port, database


def redact_url(url: str) -> str:
    """``url`` without its password (in the user part or the query), for operators' messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostinfo = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}@{hostinfo}"
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query) if k.lower() not in _SECRET_PARAMETERS]
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


async def open_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = CONNECT_TIMEOUT
) -> Pool:
    """An open pool on ``url`` (at least one connection made, so a wrong URL fails here).
    Raises a one-line ``ConfigError`` that never holds the password."""
    try:
        import asyncpg
    except ImportError:
        raise ConfigError(POSTGRES_DRIVER_MISSING) from None
    host, port, database = server_of(url)
    try:
        pool: Pool = await asyncpg.create_pool(
            dsn=url, min_size=min_size, max_size=max_size, timeout=timeout
        )
    except ValueError:  # asyncpg's ClientConfigurationError: a URL it cannot read
        raise ConfigError("DATABASE_URL is not a PostgreSQL URL asyncpg can read") from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # ``from None``: asyncpg's own exception (and its arguments) stay out of the output.
        text = postgres_unreachable_text(host, port, database, _reason(exc, timeout))
        raise ConfigError(text) from None
    return pool


def _reason(exc: BaseException, timeout: float) -> str:
    """What went wrong, in a few words (the server's own message for a refusal: PostgreSQL
    never repeats a password in it)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    # asyncio folds the refusals of each address of a host (IPv4, IPv6) into one plain OSError.
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in str(exc):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, OSError):
        return (exc.strerror or type(exc).__name__).lower()
    message = str(exc).strip().splitlines()
    return message[0] if message else type(exc).__name__

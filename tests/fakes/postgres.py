"""A real, throw-away PostgreSQL server for the tests (not a fake: the server itself).

``.ci/run`` starts one and exports its admin URL as ``IMAGINE_TEST_POSTGRES``
(``postgresql://postgres@127.0.0.1:PORT/postgres``). Without that variable the first test that
asks for a database starts one here: ``initdb`` into a temporary directory (as the
``postgres`` user when run as root, since PostgreSQL refuses to run as root), ``pg_ctl start``
on a free loopback port with ``fsync=off``, stopped when the test process exits. A machine with
neither fails those tests with a message saying what to install: a PostgreSQL test never skips.

Each test gets databases of its own (``database_url(key)``: the same key gives the same
database, for a test that reopens a store); the ``postgres_cleanup`` fixture in
``tests/conftest.py`` drops them once the test is over.
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["admin_url", "database_url", "drop_created", "psql"]

_ENV = "IMAGINE_TEST_POSTGRES"
_lock = threading.RLock()
_admin: str | None = None
_created: list[str] = []


def _bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if candidates:
        return Path(candidates[-1]).parent
    raise RuntimeError(
        "the PostgreSQL tests need a server: set IMAGINE_TEST_POSTGRES to an admin URL, or "
        "install PostgreSQL's server binaries (Debian: apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def start_server(directory: Path) -> tuple[str, Path]:
    """Start a throw-away server with its data in ``directory``; returns its admin URL and the
    data directory (``stop_server`` takes it)."""
    bindir = _bindir()
    data = directory / "data"
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    subprocess.run(
        _as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    port = _free_port()
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={directory} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        "-c max_connections=300 -c shared_buffers=64MB"
    )
    subprocess.run(
        _as_owner(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-w",
                "-l",
                str(directory / "server.log"),
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", data


def stop_server(data: Path) -> None:
    subprocess.run(
        _as_owner([str(_bindir() / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
        check=False,
        capture_output=True,
    )


def admin_url() -> str:
    """The URL of the test server's ``postgres`` database, starting the server if needed."""
    global _admin
    with _lock:
        if _admin is None:
            env = os.environ.get(_ENV)
            if env:
                _admin = env
            else:
                directory = Path(tempfile.mkdtemp(prefix="imagine-pg-"))
                directory.chmod(0o755)
                _admin, data = start_server(directory)

                def stop() -> None:
                    stop_server(data)
                    shutil.rmtree(directory, ignore_errors=True)

                atexit.register(stop)
        return _admin


def psql(sql: str, *, url: str | None = None) -> str:
    """Run ``sql`` with ``psql`` (so that the tests' own set-up needs no event loop)."""
    result = subprocess.run(
        ["psql", url or admin_url(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


def database_url(key: str) -> str:
    """A database of its own for ``key`` (created on first use, empty), as a URL."""
    name = "t_" + hashlib.sha256(key.encode()).hexdigest()[:24]
    admin = admin_url()
    with _lock:
        if name not in _created:
            psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            psql(f"CREATE DATABASE {name}")
            _created.append(name)
    parts = urlsplit(admin)
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_created() -> None:
    """Drop every database ``database_url`` created (connections still open are ended)."""
    with _lock:
        names = list(_created)
        _created.clear()
    for name in names:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

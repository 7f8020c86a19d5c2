"""Opening a PostgreSQL ``DATABASE_URL``: what an operator sees when asyncpg is missing or the
server cannot be reached (one ``imagine-bot:`` line, no traceback, never the password), and
where the ledger says its data lives."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bot.errors import ConfigError
from bot.store.database import open_store
from bot.store.postgres.connection import redact_url
from tests.fakes import postgres
from tests.fakes.process import REPO_ROOT

# Child processes running the real command line.
pytestmark = pytest.mark.e2e

PASSWORD = "s3cret-pw"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released, so no server owns it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def cli(code: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def the_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    assert out.stderr.endswith("\n") and out.stderr.count("\n") == 1, out.stderr
    return out.stderr.removeprefix("imagine-bot: ").rstrip("\n")


_USAGE = "from adapters.cli import main; raise SystemExit(main(['usage']))"


def test_a_postgres_url_without_asyncpg_says_what_to_install(tmp_path: Path) -> None:
    out = cli(
        "import sys; sys.modules['asyncpg'] = None; " + _USAGE,
        f"postgresql://bot:{PASSWORD}@127.0.0.1:{closed_port()}/imagine",
        tmp_path,
    )
    assert the_error_line(out) == (
        "DATABASE_URL is a PostgreSQL URL but asyncpg is not installed: "
        "pip install 'imagine-bot[postgres]'"
    )


def test_an_unreachable_server_is_named_without_its_password(tmp_path: Path) -> None:
    port = closed_port()
    out = cli(_USAGE, f"postgres://bot:{PASSWORD}@127.0.0.1:{port}/imagine", tmp_path)
    assert the_error_line(out) == (
        f"cannot connect to PostgreSQL at 127.0.0.1:{port} (database imagine): connection "
        "refused; check DATABASE_URL and that the server is running"
    )


async def test_a_missing_database_is_refused_by_name() -> None:
    parts = urlsplit(postgres.admin_url())
    missing = urlunsplit(parts._replace(path="/no_such_database_here"))
    with pytest.raises(ConfigError) as caught:
        await open_store(missing)
    text = str(caught.value)
    assert text.startswith(
        f"cannot connect to PostgreSQL at {parts.hostname}:{parts.port} "
        "(database no_such_database_here): "
    )
    assert 'database "no_such_database_here" does not exist' in text
    assert "\n" not in text


async def test_the_location_is_the_url_without_its_password(tmp_path: Path) -> None:
    url = postgres.database_url(str(tmp_path))
    async with await open_store(url) as store:
        assert store.ledger.location == url  # the test server's URL carries no password
        await store.ledger.ping()
    assert (
        redact_url(f"postgresql://bot:{PASSWORD}@db.internal:6432/imagine?sslmode=require")
        == "postgresql://bot@db.internal:6432/imagine?sslmode=require"
    )
    assert (
        redact_url(f"postgres://db/imagine?user=bot&password={PASSWORD}&application_name=x")
        == "postgres://db/imagine?user=bot&application_name=x"
    )

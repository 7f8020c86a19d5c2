"""Shared fixtures. Each test starts from an environment without any imagine-bot variable, so
a developer's shell or ``.env`` cannot change what a test sees."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes import e2e, postgres
from tests.fakes.clock import FakeClock
from tests.fakes.image_api import FakeImageAPI

_OUR_PREFIXES = (
    "IMAGE_",
    "DEFAULT_",
    "MODELS_FILE",
    "MAX_PROMPT_LENGTH",
    "DATABASE_URL",
    "JOB_TIMEOUT",
    "HTTP_PORT",
    "HTTP_HOST",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "DISCORD_",
    "SLACK_",
    "MODERATION_",
    "MAX_CONCURRENT",
    "MAX_JOBS_PER_USER",
    "MAX_QUEUED_JOBS",
    "SHUTDOWN_GRACE",
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture of the test is set up, a module-scoped one included.
    e2e.allow(item.get_closest_marker("e2e") is not None, test=item.nodeid)


@pytest.fixture(autouse=True)
def clean_environ(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(_OUR_PREFIXES):
            monkeypatch.delenv(name)
    # Settings read `.env` from the working directory: run each test where there is none.
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    yield


@pytest.fixture
async def image_api() -> AsyncIterator[FakeImageAPI]:
    """A running fake OpenAI-compatible image API (``tests.fakes.image_api``); its key is
    ``image_api.api_key`` and its root ``image_api.base_url`` (``http://127.0.0.1:PORT/v1``)."""
    async with FakeImageAPI() as api:
        yield api


@pytest.fixture
def clock() -> FakeClock:
    """The suite's fake clock (``tests.fakes.clock``); a ledger reads it as ``clock.utc``."""
    return FakeClock()


@pytest.fixture(autouse=True)
def postgres_cleanup() -> Iterator[None]:
    """Drop the PostgreSQL databases a test made (``tests.fakes.postgres.database_url``)."""
    yield
    postgres.drop_created()

"""The composition root: builds the one HTTP client, ledger, provider and service of a process.

Everything long-lived is created here and passed down; nothing is a module global.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx

from bot.catalog import ModelCatalog, load_catalog, usd_to_micros
from bot.config import Settings, sqlite_path
from bot.errors import ConfigError
from bot.health import Health
from bot.messages import PREVIEW_WARNING, database_path_text
from bot.models import Limits
from bot.moderation.screening import Moderation
from bot.provider.client import ImageProvider, OpenAIImageClient, new_http_client
from bot.provider.imaging import Refitter
from bot.provider.metrics import InstrumentedProvider, Metrics
from bot.provider.preview import PreviewProvider
from bot.scheduler import Scheduler
from bot.service import ImageService
from bot.store.lease import LEASE, renewing
from bot.store.ledger import SqliteLedger

__all__ = ["Runtime", "open_runtime", "probe_directory"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    catalog: ModelCatalog
    http: httpx.AsyncClient
    ledger: SqliteLedger
    provider: ImageProvider
    service: ImageService
    # Adapters report their connection state to ``health``; ``/healthz`` reads it.
    health: Health = field(default_factory=Health)
    metrics: Metrics = field(default_factory=Metrics)
    # Prompt screening, reviews and server rules (always set by ``open_runtime``).
    moderation: Moderation | None = None
    # The one bound on re-encoding images for upload limits, shared by every job.
    refitter: Refitter = field(default_factory=Refitter)


def default_limits(settings: Settings) -> Limits:
    usd = settings.default_usd_per_month
    return Limits(
        images_per_day=settings.default_images_per_day,
        images_per_month=settings.default_images_per_month,
        usd_micros_per_month=None if usd is None else usd_to_micros(usd),
    )


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, sweep: bool = False, generates: bool = True
) -> AsyncIterator[Runtime]:
    """Open the process's resources; ``sweep`` also runs the periodic orphan refund
    (long-running processes only); ``generates`` says whether to warn about previews."""
    catalog = load_catalog(settings.models_file, default=settings.default_model)
    path = sqlite_path(settings.database_url)
    if path != ":memory:":
        await asyncio.to_thread(_check_database_path, Path(path))
    job_timeout = timedelta(seconds=settings.job_timeout)
    async with contextlib.AsyncExitStack() as stack:
        http = new_http_client(timeout=settings.image_api_timeout)
        stack.push_async_callback(http.aclose)
        try:
            ledger = await SqliteLedger.open(
                path, defaults=default_limits(settings), job_timeout=job_timeout
            )
        except sqlite3.Error as exc:  # e.g. a file that is not a database
            raise ConfigError(f"cannot open the database {path}: {exc}") from None
        stack.push_async_callback(ledger.close)
        # Every process renews its lease, so that no other process takes its jobs for orphans.
        await stack.enter_async_context(renewing(ledger.renew_lease, LEASE.total_seconds() / 3))
        released = await ledger.refund_orphans()
        if released:
            log.warning("refunded %d job(s) left held by a process that stopped", released)
        provider: ImageProvider
        refitter = Refitter()
        if settings.preview or settings.image_api_key is None:
            if generates:
                log.warning(PREVIEW_WARNING)
            provider = PreviewProvider()
        else:
            provider = client = OpenAIImageClient(
                http=http,
                base_url=settings.image_api_base_url,
                api_key=settings.image_api_key,
                timeout=settings.image_api_timeout,
                max_retries=settings.image_api_max_retries,
                max_download_bytes=settings.image_max_download_bytes,
                retry_cap_seconds=settings.image_api_max_retry_wait,
                allow_private_urls=settings.image_api_allow_private_urls,
            )
            # Images waiting to be re-encoded for upload hold the client's budget until
            # delivered: no more answers are read while they wait.
            refitter = Refitter(budget=client.budget)
        moderation = Moderation.open(
            ledger,
            http=http,
            base_url=settings.moderation_api_base_url,
            api_key=settings.moderation_api_key,
            model=settings.moderation_model,
            fail_policy=settings.moderation_fail_policy,
        )
        metrics = Metrics()
        provider = InstrumentedProvider(provider, metrics)  # provider latency for /metrics
        service = ImageService(
            catalog=catalog,
            provider=provider,
            ledger=ledger,
            max_prompt_length=settings.max_prompt_length,
            job_timeout=settings.job_timeout,
            moderation=moderation,
            click_debounce=settings.click_debounce,
            scheduler=Scheduler(
                max_concurrent=settings.max_concurrent_jobs,
                max_per_user=settings.max_jobs_per_user,
                max_queue=settings.max_queued_jobs,
                # A one-off command reports a 429 at once (the client has already retried);
                # a long-running bot puts the job back at the front of the queue once.
                max_rate_limit_retries=1 if sweep else 0,
                # One 429 cannot stop every server's images for longer than the client
                # itself would wait; a longer Retry-After fails the job that got it.
                max_hold=settings.image_api_max_retry_wait,
            ),
        )
        # Runs before the ledger closes: whatever is still queued or running is refunded.
        # (`imagine-bot run` has already called `service.shutdown` with the grace period.)
        stack.push_async_callback(service.shutdown, 0.0)
        if sweep:
            task = asyncio.create_task(_sweep_forever(ledger))
            stack.push_async_callback(_cancel, task)
        yield Runtime(
            settings=settings,
            catalog=catalog,
            http=http,
            ledger=ledger,
            provider=provider,
            service=service,
            metrics=metrics,
            moderation=moderation,
            refitter=refitter,
        )


def probe_directory(directory: Path) -> None:
    """Create ``directory`` if needed and prove that this process can write there by writing
    a file: ``os.access`` says yes to root on a read-only mount and knows nothing of ACLs.
    Raises ``OSError``; its ``filename`` is the existing directory that refused."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        existing = next((p for p in directory.parents if p.is_dir()), None)
        if existing is None or exc.errno in (errno.ENOTDIR, errno.EEXIST):
            raise
        raise OSError(exc.errno, exc.strerror, str(existing)) from None
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".imagine-bot-", suffix=".probe")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(directory)) from None
    os.close(fd)
    os.unlink(probe)


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


async def _sweep_forever(ledger: SqliteLedger) -> None:
    """Refund other processes' orphans soon after their lease runs out."""
    while True:
        await asyncio.sleep(LEASE.total_seconds() / 3)
        try:
            released = await ledger.refund_orphans()
        except Exception as exc:
            log.warning("orphan sweep failed (%s); will try again", type(exc).__name__)
            continue
        if released:
            log.warning("refunded %d job(s) of a process that stopped or is overdue", released)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

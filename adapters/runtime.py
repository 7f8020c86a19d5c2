"""The composition root: builds the one HTTP client, ledger, provider and service of a process.

Everything long-lived is created here and passed down; nothing is a module global.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx

from bot.catalog import ModelCatalog, load_catalog, usd_to_micros
from bot.config import Settings, sqlite_path
from bot.health import Health
from bot.ledger import SqliteLedger
from bot.messages import PREVIEW_WARNING
from bot.metrics import InstrumentedProvider, Metrics
from bot.models import Limits
from bot.moderation import Moderation
from bot.preview import PreviewProvider
from bot.provider import ImageProvider, OpenAIImageClient, new_http_client
from bot.scheduler import Scheduler
from bot.service import ImageService

__all__ = ["Runtime", "open_runtime"]

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
    """Open the process's resources; ``sweep`` also runs the periodic stale-hold refund
    (long-running processes only); ``generates`` says whether to warn about previews."""
    catalog = load_catalog(settings.models_file, default=settings.default_model)
    path = sqlite_path(settings.database_url)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    job_timeout = timedelta(seconds=settings.job_timeout)
    async with contextlib.AsyncExitStack() as stack:
        http = new_http_client(timeout=settings.image_api_timeout)
        stack.push_async_callback(http.aclose)
        ledger = await SqliteLedger.open(path, defaults=default_limits(settings))
        stack.push_async_callback(ledger.close)
        released = await ledger.refund_stale(older_than=job_timeout)
        if released:
            log.warning("refunded %d job(s) left held by an earlier run", released)
        provider: ImageProvider
        if settings.preview or settings.image_api_key is None:
            if generates:
                log.warning(PREVIEW_WARNING)
            provider = PreviewProvider()
        else:
            provider = OpenAIImageClient(
                http=http,
                base_url=settings.image_api_base_url,
                api_key=settings.image_api_key,
                timeout=settings.image_api_timeout,
                max_retries=settings.image_api_max_retries,
                max_download_bytes=settings.image_max_download_bytes,
                allow_private_urls=settings.image_api_allow_private_urls,
            )
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
            scheduler=Scheduler(
                max_concurrent=settings.max_concurrent_jobs,
                max_per_user=settings.max_jobs_per_user,
                max_queue=settings.max_queued_jobs,
                # A one-off command reports a 429 at once (the client has already retried);
                # a long-running bot puts the job back at the front of the queue once.
                max_rate_limit_retries=1 if sweep else 0,
            ),
        )
        # Runs before the ledger closes: whatever is still queued or running is refunded.
        # (`imagine-bot run` has already called `service.shutdown` with the grace period.)
        stack.push_async_callback(service.shutdown, 0.0)
        if sweep:
            task = asyncio.create_task(_sweep_forever(ledger, job_timeout))
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
        )


async def _sweep_forever(ledger: SqliteLedger, job_timeout: timedelta) -> None:
    interval = max(5.0, min(60.0, job_timeout.total_seconds() / 4))
    while True:
        await asyncio.sleep(interval)
        try:
            released = await ledger.refund_stale(older_than=job_timeout)
        except Exception:
            log.exception("stale-hold sweep failed; will try again")
            continue
        if released:
            log.warning("refunded %d job(s) held past the job timeout", released)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

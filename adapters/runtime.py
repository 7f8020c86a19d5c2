"""The composition root: builds the one HTTP client, store, provider and service of a process,
and the admins' services on them.

Everything long-lived is created here and passed down; nothing is a module global. Nothing
here names a storage backend: ``bot.store.database.open_store`` picks it from
``DATABASE_URL``, and everything is typed by the store's protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from bot.admin import QuotaAdmin
from bot.catalog import ModelCatalog, load_catalog
from bot.cluster import ClusterScheduler
from bot.config import Settings
from bot.health import Health
from bot.messages import PREVIEW_WARNING
from bot.models import Limits
from bot.moderation.admin import ModerationAdmin
from bot.moderation.screening import Moderation
from bot.money import usd_to_micros
from bot.provider.client import ImageProvider, OpenAIImageClient, new_http_client
from bot.provider.imaging import Refitter
from bot.provider.metrics import InstrumentedProvider, Metrics
from bot.provider.preview import PreviewProvider
from bot.retry import RetryPolicy
from bot.scheduler import JobScheduler, Scheduler
from bot.service import ImageService
from bot.store.database import open_store
from bot.store.lease import LEASE, renewing
from bot.store.ledger import Ledger

__all__ = ["Runtime", "open_runtime", "retry_policy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    catalog: ModelCatalog
    http: httpx.AsyncClient
    ledger: Ledger
    provider: ImageProvider
    service: ImageService
    # Prompt screening, reviews and server rules.
    moderation: Moderation
    # The admins' services every platform calls (permission-checked, audited).
    quota_admin: QuotaAdmin
    moderation_admin: ModerationAdmin
    # Adapters report their connection state to ``health``; ``/healthz`` reads it.
    health: Health = field(default_factory=Health)
    metrics: Metrics = field(default_factory=Metrics)
    # The one bound on re-encoding images for upload limits, shared by every job.
    refitter: Refitter = field(default_factory=Refitter)


def default_limits(settings: Settings) -> Limits:
    usd = settings.default_usd_per_month
    return Limits(
        images_per_day=settings.default_images_per_day,
        images_per_month=settings.default_images_per_month,
        usd_micros_per_month=None if usd is None else usd_to_micros(usd),
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    """The long-running bot's policy from ``IMAGE_API_MAX_RETRIES`` and
    ``IMAGE_API_MAX_RETRY_WAIT`` (``RetryPolicy.one_off()`` for a one-off command)."""
    return RetryPolicy(
        provider_retries=settings.image_api_max_retries,
        max_wait=settings.image_api_max_retry_wait,
    )


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    retry: RetryPolicy | None = None,
    orphan_sweep: bool = False,
    generates: bool = True,
) -> AsyncIterator[Runtime]:
    """Open the process's resources. ``retry`` is how hard a job tries when the image API
    fails (default: ``retry_policy(settings).one_off()``, for one-off commands);
    ``orphan_sweep`` also runs the periodic refund of other processes' orphans (long-running
    processes only); ``generates`` says whether to warn about previews."""
    retry = retry or retry_policy(settings).one_off()
    catalog = load_catalog(settings.models_file, default=settings.default_model)
    async with contextlib.AsyncExitStack() as stack:
        http = new_http_client(timeout=settings.image_api_timeout)
        stack.push_async_callback(http.aclose)
        store = await open_store(
            settings.database_url,
            defaults=default_limits(settings),
            job_timeout=timedelta(seconds=settings.job_timeout),
        )
        stack.push_async_callback(store.close)
        ledger = store.ledger
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
                retry=retry,
                max_download_bytes=settings.image_max_download_bytes,
                allow_private_urls=settings.image_api_allow_private_urls,
            )
            # Images waiting to be re-encoded for upload hold the client's budget until
            # delivered: no more answers are read while they wait.
            refitter = Refitter(budget=client.budget)
        moderation = Moderation.open(
            store.moderation,
            http=http,
            base_url=settings.moderation_api_base_url,
            api_key=settings.moderation_api_key,
            model=settings.moderation_model,
            fail_policy=settings.moderation_fail_policy,
        )
        metrics = Metrics()
        provider = InstrumentedProvider(provider, metrics)  # provider latency for /metrics
        scheduler: JobScheduler
        if store.queue is None:
            scheduler = Scheduler(
                max_concurrent=settings.max_concurrent_jobs,
                max_per_user=settings.max_jobs_per_user,
                max_per_server=settings.max_jobs_per_server,
                max_queue=settings.max_queued_jobs,
                retry=retry,
            )
        else:
            # Several processes on one PostgreSQL: one queue, one cap, one turn order.
            scheduler = ClusterScheduler(
                store.queue,
                dsn=settings.database_url,
                now=ledger.now,
                max_concurrent=settings.max_concurrent_jobs,
                max_per_user=settings.max_jobs_per_user,
                max_per_server=settings.max_jobs_per_server,
                max_queue=settings.max_queued_jobs,
                retry=retry,
            )
        service = ImageService(
            catalog=catalog,
            provider=provider,
            ledger=ledger,
            max_prompt_length=settings.max_prompt_length,
            job_timeout=settings.job_timeout,
            moderation=moderation,
            click_debounce=settings.click_debounce,
            scheduler=scheduler,
        )
        if isinstance(scheduler, ClusterScheduler):
            scheduler.adopt_with(service.run_adopted, lambda: service.platforms)
            await scheduler.start()
        # Runs before the store closes: whatever is still queued or running is refunded.
        # (`imagine-bot run` has already called `service.shutdown` with the grace period.)
        stack.push_async_callback(service.shutdown, 0.0)
        if orphan_sweep:
            task = asyncio.create_task(_sweep_forever(ledger))
            stack.push_async_callback(_cancel, task)
        yield Runtime(
            settings=settings,
            catalog=catalog,
            http=http,
            ledger=ledger,
            provider=provider,
            service=service,
            moderation=moderation,
            quota_admin=QuotaAdmin(ledger),
            moderation_admin=ModerationAdmin(moderation),
            metrics=metrics,
            refitter=refitter,
        )


async def _sweep_forever(ledger: Ledger) -> None:
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

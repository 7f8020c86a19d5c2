"""The generation service: validate, price, hold quota, call the provider, charge or refund.

Every adapter goes through ``ImageService``; it never sees a platform object.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bot.catalog import ModelCatalog
from bot.errors import (
    BotError,
    ContentRejectedError,
    DeliveryError,
    DuplicateRequestError,
    InvalidRequestError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
)
from bot.ledger import Ledger
from bot.models import (
    Allowance,
    GenerationRequest,
    GenerationResult,
    JobRecord,
    ModelSpec,
    Requester,
)
from bot.parsing import MAX_SEED, RequestOptions, parse_request
from bot.provider import ImageProvider

__all__ = ["Deliver", "ImageService"]

log = logging.getLogger(__name__)

Deliver = Callable[[GenerationResult], Awaitable[None]]


class ImageService:
    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        provider: ImageProvider,
        ledger: Ledger,
        max_prompt_length: int = 4000,
        job_timeout: float | None = None,
    ) -> None:
        self.catalog = catalog
        self.provider = provider
        self.ledger = ledger
        self.max_prompt_length = max_prompt_length
        # A job must settle well before the ledger's stale-hold sweep (which refunds holds
        # older than the job timeout) could refund it behind our back.
        self._budget = None if job_timeout is None else round(job_timeout * 0.8, 3)

    def parse(self, text: str, options: RequestOptions | None = None) -> GenerationRequest:
        """The request typed as ``text`` (the shared grammar), with structured ``options``
        (e.g. Discord's slash-command options) merged in. Raises ``InvalidRequestError``."""
        return parse_request(
            text,
            catalog=self.catalog,
            options=options,
            max_prompt_length=self.max_prompt_length,
        )

    def price(self, request: GenerationRequest) -> int:
        """What the job will cost in micro-dollars ($0 with the preview provider)."""
        if not self.provider.billable:
            return 0
        return self.catalog.get(request.model).job_price_micros(request.size, request.n)

    async def generate(
        self,
        request: GenerationRequest,
        requester: Requester,
        *,
        event_id: str | None = None,
        deliver: Deliver | None = None,
    ) -> GenerationResult:
        """Run one job end to end. A seed is chosen when none was given, so the job can be
        repeated exactly.

        ``deliver`` posts the images (an adapter's upload); the job is charged only once it
        returns, and refunded if it raises. Without it, images count as delivered when drawn
        (the CLI saves them itself)."""
        spec = self.catalog.get(request.model)
        if request.n > spec.max_n or request.size not in spec.sizes:
            raise InvalidRequestError(f"{spec.short_name} cannot draw {request.n} x {request.size}")
        if request.seed is None:
            request = replace(request, seed=secrets.randbelow(MAX_SEED + 1))
        cost = self.price(request)
        hold = await self.ledger.hold(
            requester=requester, request=request, cost_micros=cost, event_id=event_id
        )
        if hold.duplicate:
            raise DuplicateRequestError(hold.job_id)
        job_id = hold.job_id
        log.info(
            "job %s: %s x%d %s for %s", job_id, spec.id, request.n, request.size, requester.user_id
        )
        log.debug("job %s prompt: %r", job_id, request.prompt)
        try:
            async with asyncio.timeout(self._budget):
                result = await self._draw(job_id, request, spec, requester, cost)
                if deliver is not None:
                    await deliver(result)
        except BaseException as exc:
            # Every way out before the charge, cancellation included, releases the hold.
            reason = _refund_reason(exc)
            log.info("job %s: refunding (%s)", job_id, reason)
            await self._refund(job_id, reason)
            if isinstance(exc, TimeoutError):
                late = ProviderTimeoutError(f"job {job_id} took longer than {self._budget} s")
                late.job_id = job_id
                raise late from exc
            if isinstance(exc, BotError):
                exc.job_id = job_id
            raise
        await self.ledger.charge(job_id, images=len(result.images), cost_micros=result.cost_micros)
        log.info(
            "job %s: delivered %d image(s), charged %d micro-USD",
            job_id,
            len(result.images),
            result.cost_micros,
        )
        return result

    async def _draw(
        self,
        job_id: str,
        request: GenerationRequest,
        spec: ModelSpec,
        requester: Requester,
        cost: int,
    ) -> GenerationResult:
        images = (await self.provider.generate(request, spec))[: request.n]
        if not images:
            raise ProviderResponseError("the provider returned no images")
        # The hold already counts this job, so the allowance shown with it is what will be
        # left once it is charged.
        return GenerationResult(
            job_id=job_id,
            request=request,
            images=images,
            cost_micros=spec.image_price_micros(request.size) * len(images) if cost else 0,
            model_label=spec.label,
            preview=not self.provider.billable,
            allowance=await self.ledger.allowance(requester),
        )

    async def reroll(
        self,
        job_id: str,
        requester: Requester,
        *,
        event_id: str | None = None,
        n: int | None = None,
        deliver: Deliver | None = None,
    ) -> GenerationResult:
        """The job ``job_id`` again with a new seed, charged to ``requester``."""
        record = await self.ledger.job(job_id)
        request = record.request
        spec = self.catalog.get(request.model)
        new = replace(request, n=min(n or request.n, spec.max_n), seed=None)
        return await self.generate(new, requester, event_id=event_id, deliver=deliver)

    async def job(self, job_id: str) -> JobRecord:
        return await self.ledger.job(job_id)

    async def allowance(self, requester: Requester) -> Allowance:
        return await self.ledger.allowance(requester)

    async def _refund(self, job_id: str, reason: str) -> None:
        # Shielded: a cancelled job still gets its refund written.
        try:
            await asyncio.shield(self.ledger.refund(job_id, reason=reason))
        except Exception:
            log.exception("job %s: refund failed; the stale-hold sweep will release it", job_id)


def _refund_reason(exc: BaseException) -> str:
    if isinstance(exc, ContentRejectedError):
        return "content_rejected"
    if isinstance(exc, DeliveryError):
        return "delivery_failed"
    if isinstance(exc, ProviderError):
        return f"provider_error:{type(exc).__name__}"
    if isinstance(exc, TimeoutError):
        return "job_timeout"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return f"failed:{type(exc).__name__}"

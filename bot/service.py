"""The generation service: validate, price, hold quota, call the provider, charge or refund.

Every adapter goes through ``ImageService``; it never sees a platform object.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import replace

from bot.catalog import ModelCatalog
from bot.errors import (
    ContentRejectedError,
    DuplicateRequestError,
    InvalidRequestError,
    ProviderError,
)
from bot.ledger import Ledger
from bot.models import (
    Allowance,
    GenerationRequest,
    GenerationResult,
    JobRecord,
    Requester,
)
from bot.parsing import MAX_SEED, RequestOptions, parse_request
from bot.provider import ImageProvider

__all__ = ["ImageService"]

log = logging.getLogger(__name__)


class ImageService:
    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        provider: ImageProvider,
        ledger: Ledger,
        max_prompt_length: int = 4000,
    ) -> None:
        self.catalog = catalog
        self.provider = provider
        self.ledger = ledger
        self.max_prompt_length = max_prompt_length

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
    ) -> GenerationResult:
        """Run one job end to end. A seed is chosen when none was given, so the job can be
        repeated exactly. Nothing is charged unless images are delivered."""
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
            images = await self.provider.generate(request, spec)
        except ContentRejectedError:
            await self._refund(job_id, "content_rejected")
            raise
        except ProviderError as exc:
            await self._refund(job_id, f"provider_error:{type(exc).__name__}")
            raise
        except BaseException:
            # Cancellation and unexpected failures must not leave quota held.
            await self._refund(job_id, "failed")
            raise
        delivered = images[: request.n]
        if not delivered:
            await self._refund(job_id, "no_images")
            raise ProviderError("the provider returned no images")
        charged = spec.image_price_micros(request.size) * len(delivered) if cost else 0
        await self.ledger.charge(job_id, images=len(delivered), cost_micros=charged)
        allowance = await self.ledger.allowance(requester)
        log.info(
            "job %s: delivered %d image(s), charged %d micro-USD", job_id, len(delivered), charged
        )
        return GenerationResult(
            job_id=job_id,
            request=request,
            images=tuple(delivered),
            cost_micros=charged,
            model_label=spec.label,
            preview=not self.provider.billable,
            allowance=allowance,
        )

    async def reroll(
        self,
        job_id: str,
        requester: Requester,
        *,
        event_id: str | None = None,
        n: int | None = None,
    ) -> GenerationResult:
        """The job ``job_id`` again with a new seed, charged to ``requester``."""
        record = await self.ledger.job(job_id)
        request = record.request
        spec = self.catalog.get(request.model)
        new = replace(request, n=min(n or request.n, spec.max_n), seed=None)
        return await self.generate(new, requester, event_id=event_id)

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

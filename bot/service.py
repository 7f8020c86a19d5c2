"""The generation service: validate, price, hold quota, call the provider, charge or refund.

Every adapter goes through ``ImageService``; it never sees a platform object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import timedelta

from bot.access import may_act_on
from bot.catalog import ModelCatalog
from bot.courier import Courier
from bot.errors import (
    BotError,
    DuplicateRequestError,
    InvalidRequestError,
    JobCancelledError,
    JobHandedOverError,
    JobTimeoutError,
    PermissionDeniedError,
    ProviderResponseError,
    ShuttingDownError,
)
from bot.event_key import again
from bot.logcontext import bind_job
from bot.models import (
    Allowance,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    JobRecord,
    JobState,
    ModelSpec,
    Requester,
)
from bot.moderation.screening import Moderation
from bot.parsing import MAX_SEED, RequestOptions, parse_request
from bot.provider.client import ImageProvider
from bot.scheduler import JobScheduler, JobTicket, Progress, Withdrawal
from bot.store.lease import INTERRUPTED
from bot.store.ledger import Interrupted, Ledger

__all__ = ["VARIATIONS", "Deliver", "ImageService", "Progress"]

log = logging.getLogger(__name__)

Deliver = Callable[[GenerationResult], Awaitable[None]]

VARIATIONS = 4
"""How many images a Variations click asks for: ``reroll(..., n=VARIATIONS)``, capped by the
model's ``max_n``."""

# How long a stop waits, after the grace, for the members of refunded jobs to be told.
NOTICE_GRACE_S = 10.0


class ImageService:
    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        provider: ImageProvider,
        ledger: Ledger,
        max_prompt_length: int = 4000,
        job_timeout: float | None = None,
        scheduler: JobScheduler | None = None,
        moderation: Moderation | None = None,
        click_debounce: float = 5.0,
    ) -> None:
        self.catalog = catalog
        self.provider = provider
        self.ledger = ledger
        # Without a scheduler, provider calls run at once with no caps (one-off commands).
        self.scheduler = scheduler
        self.moderation = moderation  # screens prompts before the hold (``screen=True``)
        self.click_debounce = click_debounce
        # Per platform: how to answer about a job another process accepted (``bot.courier``).
        self._couriers: dict[str, Courier] = {}
        self._closing = False
        # Platform events an adapter has taken on (acknowledged) and not finished: a stop
        # waits for them, jobs not yet held included.
        self._handling = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._unsettled: set[str] = set()  # jobs admitted and not yet charged or refunded
        self._settled = asyncio.Event()
        self._settled.set()
        self.max_prompt_length = max_prompt_length
        # A job must settle well before the ledger's stale-hold sweep (which refunds holds
        # older than the job timeout) could refund it behind our back.
        self._budget = None if job_timeout is None else round(job_timeout * 0.8, 3)

    def add_courier(self, platform: str, courier: Courier) -> None:
        """Let this process run ``platform``'s jobs that another process accepted: a running
        adapter registers how it answers from a job's ``reach`` (``bot.courier``)."""
        self._couriers[platform] = courier

    @property
    def platforms(self) -> frozenset[str]:
        """The platforms whose jobs this process can deliver wherever they were accepted."""
        return frozenset(self._couriers)

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
        progress: Progress | None = None,
        screen: bool = True,
        reach: Mapping[str, str] | None = None,
    ) -> GenerationResult:
        """Run one job end to end. A seed is chosen when none was given, so the job can be
        repeated exactly.

        ``deliver`` posts the images (an adapter's upload); the job is charged only once it
        returns, and refunded if it raises. Without it, images count as delivered when drawn
        (the CLI saves them itself).

        With a scheduler, the job waits its turn after the quota hold: ``progress`` is awaited
        with its ``QueueStatus`` when it is queued, whenever its ``ahead`` count changes, and
        once when it starts (``running=True``); its exceptions are logged and ignored. The
        scheduler's refusals (``TooManyJobsError``, ``QueueFullError``), a cancel while queued
        (``JobCancelledError``) and shutdown (``ShuttingDownError``) all refund the hold.
        The job time budget (80% of ``JOB_TIMEOUT``) runs from the hold, queue wait included,
        so the stale-hold sweep can never refund a live job; past it, ``JobTimeoutError``.
        Every error raised once the job exists carries its ``job_id``, and the hold is
        refunded with the error's ``refund_reason``."""
        if self._closing:
            raise ShuttingDownError()
        spec = self.catalog.get(request.model)
        if request.n > spec.max_n or request.size not in spec.sizes:
            raise InvalidRequestError(f"{spec.short_name} cannot draw {request.n} x {request.size}")
        if request.seed is None:
            request = replace(request, seed=secrets.randbelow(MAX_SEED + 1))
        if screen and self.moderation is not None:
            await self.moderation.screen(request, requester)  # refusals never hold quota
        cost = self.price(request)
        hold = await self.ledger.hold(
            requester=requester, request=request, cost_micros=cost, event_id=event_id, reach=reach
        )
        if hold.duplicate and event_id is not None and await self._interrupted(hold.job_id):
            # The platform sent the event again because a restart killed its job before it
            # answered: run it once more, under a key of its own so that a third delivery
            # is a duplicate again.
            log.info(
                "event %s: its job %s was interrupted; running it again", event_id, hold.job_id
            )
            hold = await self.ledger.hold(
                requester=requester,
                request=request,
                cost_micros=cost,
                event_id=again(event_id),
                reach=reach,
            )
        if hold.duplicate:
            raise DuplicateRequestError(hold.job_id)
        job_id = hold.job_id
        bind_job(job_id)  # every later log line in this task says job=<id>
        log.info(
            "job %s: %s x%d %s for %s", job_id, spec.id, request.n, request.size, requester.user_id
        )
        log.debug("job %s prompt: %r", job_id, request.prompt)

        async def work() -> GenerationResult:
            async with self._admit(job_id, requester) as ticket:
                result = await self._draw(job_id, request, spec, requester, cost, ticket, progress)
                if deliver is not None:
                    await deliver(result)
                return result

        return await self._run(job_id, work, budget=self._budget)

    async def _run(
        self, job_id: str, work: Callable[[], Awaitable[GenerationResult]], *, budget: float | None
    ) -> GenerationResult:
        """Run a held job's ``work`` (its turn, the provider call, the delivery) within
        ``budget`` seconds, then charge it for what was delivered; every way out before the
        charge refunds the hold, except a job handed to another process."""
        try:
            async with asyncio.timeout(budget):
                result = await work()
        except TimeoutError as exc:
            # The job's own budget ran out, whichever step it was at.
            late = JobTimeoutError(job_id, budget)
            await self._refund(job_id, late.refund_reason)
            raise late from exc
        except JobHandedOverError:
            self._settle(job_id)  # the process that runs it now settles it
            raise
        except BotError as exc:
            exc.in_job(job_id)  # the provider and the adapters make theirs not knowing the job
            await self._refund(job_id, exc.refund_reason)
            raise
        except BaseException as exc:
            # Every way out before the charge, cancellation included, releases the hold.
            cancelled = isinstance(exc, asyncio.CancelledError)
            reason = "cancelled" if cancelled else f"failed:{type(exc).__name__}"
            await self._refund(job_id, reason)
            raise
        try:
            charge = self.ledger.charge(
                job_id, images=len(result.images), cost_micros=result.cost_micros
            )
            await asyncio.shield(charge)
        finally:
            self._settle(job_id)
        log.info(
            "job %s: delivered %d image(s), charged %d micro-USD",
            job_id,
            len(result.images),
            result.cost_micros,
        )
        return result

    async def run_adopted(
        self, ticket: JobTicket, reach: Mapping[str, str], deadline: float | None
    ) -> None:
        """Run a job another process accepted and can no longer run (it stopped or died),
        already holding a provider slot (``ticket``), and answer its member through the
        platform's courier: charged once delivered, refunded (and the member told) otherwise.
        ``deadline`` (Unix seconds) is the job's own: past it the sweep would refund it."""
        job_id = ticket.job_id
        record = await self.ledger.job(job_id)
        courier = self._couriers.get(record.requester.platform)
        if record.state is not JobState.HELD or courier is None:
            return
        bind_job(job_id)
        self._unsettle(job_id)
        request = record.request
        spec = self.catalog.get(request.model)
        budget = self._budget
        if deadline is not None:
            # Settle a little before the job's deadline, as a job run where it was accepted.
            left = max(0.0, (deadline - self.ledger.now().timestamp()) * 0.9)
            budget = left if budget is None else min(budget, left)

        async def work() -> GenerationResult:
            result = await self._draw(
                job_id, request, spec, record.requester, record.held_micros, ticket
            )
            await courier.deliver(record, reach, result)
            return result

        try:
            await self._run(job_id, work, budget=budget)
        except BotError as exc:
            if not exc.notified:
                await courier.fail(record, reach, exc)

    async def _draw(
        self,
        job_id: str,
        request: GenerationRequest,
        spec: ModelSpec,
        requester: Requester,
        cost: int,
        ticket: JobTicket | None = None,
        progress: Progress | None = None,
    ) -> GenerationResult:
        def call() -> Awaitable[tuple[GeneratedImage, ...]]:
            return self.provider.generate(request, spec)

        drawn = await (call() if ticket is None else ticket.call(call, progress=progress))
        images = drawn[: request.n]
        if not images:
            raise ProviderResponseError("the provider returned no images", job_id=job_id)
        charged = spec.image_price_micros(request.size) * len(images) if cost else 0
        # The hold counts the whole job; what is left once it is charged for the images that
        # arrived is that allowance plus what the hold over-reserved.
        allowance = _release(
            await self.ledger.allowance(requester),
            images=request.n - len(images),
            micros=cost - charged,
        )
        return GenerationResult(
            job_id=job_id,
            request=request,
            images=images,
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
        deliver: Deliver | None = None,
        progress: Progress | None = None,
        screen: bool = True,
        reach: Mapping[str, str] | None = None,
    ) -> GenerationResult:
        """The job ``job_id`` again with a new seed, charged to ``requester``."""
        record = await self.ledger.job(job_id)
        request = record.request
        spec = self.catalog.get(request.model)
        new = replace(request, n=min(n or request.n, spec.max_n), seed=None)
        return await self.generate(
            new,
            requester,
            event_id=event_id,
            deliver=deliver,
            progress=progress,
            screen=screen,
            reach=reach,
        )

    async def retry(
        self,
        job_id: str,
        requester: Requester,
        *,
        event_id: str | None = None,
        deliver: Deliver | None = None,
        progress: Progress | None = None,
        reach: Mapping[str, str] | None = None,
    ) -> GenerationResult:
        """The job ``job_id`` again exactly (same seed), charged to ``requester``: "Try again"
        on a job a restart interrupted."""
        record = await self.ledger.job(job_id)
        return await self.generate(
            record.request,
            requester,
            event_id=event_id,
            deliver=deliver,
            progress=progress,
            reach=reach,
        )

    async def first_click(self, requester: Requester, action: str, job_id: str) -> bool:
        """Whether this is the member's first press of ``action`` on job ``job_id`` within
        ``CLICK_DEBOUNCE``; a repeat starts nothing and costs nothing. Kept in the ledger, so
        it holds whichever process receives the click."""
        if self.click_debounce <= 0:
            return True
        key = ":".join(
            (requester.platform, requester.workspace_id, requester.user_id, action, job_id)
        )
        return await self.ledger.first_click(key, window=timedelta(seconds=self.click_debounce))

    async def claim_notices(self, platform: str) -> list[Interrupted]:
        """Members of ``platform`` to tell that a restart interrupted their job (claimed by
        this process: once told, call ``notice_sent``)."""
        return await self.ledger.claim_notices(platform)

    async def notice_sent(self, job_id: str) -> None:
        await self.ledger.notice_sent(job_id)

    async def cancel(self, job_id: str, requester: Requester) -> None:
        """Cancel a queued job; its waiting ``generate`` refunds it and raises
        ``JobCancelledError``. Only the job's requester, or an admin of the same server, may
        cancel (else ``PermissionDeniedError``); a job that has started or finished cannot be
        cancelled (``InvalidRequestError``); an unknown id raises ``JobNotFoundError``."""
        record = await self.ledger.job(job_id)
        if not may_act_on(requester, record.requester):
            raise PermissionDeniedError("cancel another member's image job")
        found = Withdrawal.NOT_QUEUED
        if self.scheduler is not None:
            found = await self.scheduler.withdraw(job_id)
        if found is Withdrawal.WAITER_REFUNDS:
            log.info("job %s: cancel requested by %s", job_id, requester.user_id)
            return
        if found is Withdrawal.CALLER_REFUNDS:
            log.info("job %s: cancelled by %s; no process waited for it", job_id, requester.user_id)
            await self.ledger.refund(job_id, reason=JobCancelledError(job_id).refund_reason)
            return
        # Queued or running in a process that has since stopped: nobody will run it.
        if await self.ledger.refund_orphan(job_id):
            log.info("job %s: orphan refunded on cancel by %s", job_id, requester.user_id)
            return
        raise InvalidRequestError("that job is no longer waiting in the queue")

    @contextlib.asynccontextmanager
    async def handling(self) -> AsyncIterator[None]:
        """Around an adapter's work on one platform event it has taken on, from before its
        acknowledgement to its last answer: ``shutdown`` waits for it."""
        self._handling += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._handling -= 1
            if not self._handling:
                self._quiet.set()

    async def shutdown(self, grace: float) -> None:
        """Drain, then stop: the events the adapters took on before they stopped taking new
        ones, and their jobs, queued ones included, get ``grace`` seconds; then new jobs are
        refused (``ShuttingDownError``) and what is left is cancelled and refunded. Returns
        once every job has been charged or refunded."""
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        if self.scheduler is not None:
            # Queued jobs go to the other processes sharing the queue now, not after the grace.
            await self.scheduler.hand_over()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._quiet.wait()
        grace = max(0.0, end - loop.time())
        if self.scheduler is not None:
            await self.scheduler.close(grace)
            grace = 0.0
        self._closing = True
        try:
            # Without a scheduler, running jobs get the grace; with one, the last refunds
            # are already under way and take a moment.
            await asyncio.wait_for(self._settled.wait(), max(grace, 10.0))
        except TimeoutError:
            log.warning("shutdown: %d job(s) still unsettled", len(self._unsettled))
        # The members of the jobs just refunded are being told: let those answers go out.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(NOTICE_GRACE_S):
                await self._quiet.wait()
        if self._handling:
            log.warning("shutdown: %d answer(s) to members cut short", self._handling)

    @contextlib.asynccontextmanager
    async def _admit(self, job_id: str, requester: Requester) -> AsyncIterator[JobTicket | None]:
        self._unsettle(job_id)
        if self.scheduler is None:
            yield None
            return
        async with self.scheduler.admit(job_id, requester) as ticket:
            yield ticket

    def _unsettle(self, job_id: str) -> None:
        """``job_id`` is held and not settled yet: a stop waits for it."""
        self._unsettled.add(job_id)
        self._settled.clear()

    def _settle(self, job_id: str) -> None:
        self._unsettled.discard(job_id)
        if not self._unsettled:
            self._settled.set()

    async def job(self, job_id: str) -> JobRecord:
        return await self.ledger.job(job_id)

    async def _interrupted(self, job_id: str) -> bool:
        record = await self.ledger.job(job_id)
        return record.state is JobState.REFUNDED and record.refund_reason == INTERRUPTED

    async def allowance(self, requester: Requester) -> Allowance:
        return await self.ledger.allowance(requester)

    async def _refund(self, job_id: str, reason: str) -> None:
        log.info("job %s: refunding (%s)", job_id, reason)
        # Shielded: a cancelled job still gets its refund written.
        try:
            await asyncio.shield(self.ledger.refund(job_id, reason=reason))
        except Exception:
            log.exception("job %s: refund failed; the stale-hold sweep will release it", job_id)
        finally:
            self._settle(job_id)


def _release(allowance: Allowance, *, images: int, micros: int) -> Allowance:
    if not images and not micros:
        return allowance
    return Allowance(
        tuple(
            replace(usage, used=max(0, usage.used - (micros if usage.name.is_money else images)))
            for usage in allowance.limits
        )
    )

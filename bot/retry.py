"""How hard one job tries when the image API fails for a while: one value, given both to the
provider client (``bot.provider.client.OpenAIImageClient``) and to the fair queue
(``bot.scheduler.Scheduler``), so that the whole policy reads in one place."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from bot.errors import ConfigError, ProviderRateLimitedError, ProviderWaitTooLongError

__all__ = ["RetryPolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries happen in two layers, one inside the other.

    1. The provider client retries one call up to ``provider_retries`` times on a 429 (not a
       quota one), a 5xx, a 408 or 409, or a failed connection; never after a timeout or a
       cut-off answer, which the provider may have billed (the table in
       ``bot.provider.client``). It waits what the provider asks (``Retry-After``), and does
       not retry a provider asking for more than ``max_wait`` seconds; without a
       ``Retry-After`` it waits ``backoff_base * 2**n`` seconds, at most ``backoff_cap`` and
       ``max_wait``, less up to 25 % jitter.
    2. When the call still ends rate-limited (a 429 after the client's retries), the scheduler
       halves the concurrency and holds every new start for the ``Retry-After`` (or
       ``default_hold`` seconds without one), never more than ``max_wait``; the job goes back
       to the front of the queue, at most ``requeues`` times. A ``Retry-After`` above
       ``max_wait`` fails the job at once.

    **Worst case**: one job sends ``(provider_retries + 1) * (requeues + 1)`` requests
    (``worst_case_attempts``). With the defaults, a 429 storm costs **8 attempts**: 4 per
    call, and the call made twice. A one-off command (``one_off()``: no re-queue) makes at
    most 4. All of them run within the job's time budget (80 % of ``JOB_TIMEOUT``, queue
    wait included), which ends the job first if it is shorter.

    The defaults match ``IMAGE_API_MAX_RETRIES`` (3) and ``IMAGE_API_MAX_RETRY_WAIT`` (20 s).
    """

    provider_retries: int = 3
    requeues: int = 1
    max_wait: float = 20.0
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    default_hold: float = 1.0

    def __post_init__(self) -> None:
        if (
            self.provider_retries < 0
            or self.requeues < 0
            or self.max_wait < 0
            or self.backoff_base < 0
            or self.backoff_cap < 0
            or self.default_hold < 0
        ):
            raise ConfigError(
                "retry limits must not be negative (provider retries, re-queues, waits)"
            )

    @property
    def worst_case_attempts(self) -> int:
        """The most requests one job sends to the image API."""
        return (self.provider_retries + 1) * (self.requeues + 1)

    def backoff(self, retry: int) -> float:
        """The wait before retry ``retry + 1`` when the provider did not say, before jitter."""
        return float(min(self.backoff_base * 2**retry, self.backoff_cap, self.max_wait))

    def queue_hold(self, rate_limited: ProviderRateLimitedError) -> float:
        """How long a call that ended rate-limited holds every new start: what the provider
        asked (``default_hold`` when it did not say), never more than ``max_wait``."""
        asked = rate_limited.retry_after
        return min(self.default_hold if asked is None else asked, self.max_wait)

    def too_long(
        self, rate_limited: ProviderRateLimitedError, job_id: str
    ) -> ProviderWaitTooLongError | None:
        """The error a job fails with at once when the provider asks it to wait longer than
        the queue may be held (``None``: it goes back to the queue, within ``requeues``)."""
        wait = rate_limited.retry_after
        if wait is None or wait <= self.max_wait:
            return None
        log.warning(
            "job %s: the provider asks to wait %.0f s, more than the %.0f s the queue is held; "
            "the job fails",
            job_id,
            wait,
            self.max_wait,
        )
        return ProviderWaitTooLongError(
            rate_limited.detail,
            wait=wait,
            hold=self.max_wait,
            status=rate_limited.status,
            request_id=rate_limited.request_id,
        )

    def one_off(self) -> RetryPolicy:
        """The policy for a one-off command: a 429 is reported at once, after the client's own
        retries (nobody else's job waits behind it, and its user is at the terminal)."""
        return replace(self, requeues=0)

"""The exceptions the core raises; adapters render them with ``bot.messages.describe``.

Every error carries structured fields and no user-facing wording. The groups carry what the
callers used to work out case by case: ``refund_reason`` (what the ledger stores when a job's
hold is released because of the error) and ``operator_fault`` (the user cannot fix it: shown
as "temporarily unavailable", logged in full)::

    BotError                            refund_reason failed:<class>
    ├─ ConfigError                      operator mistake at start-up (bad MODELS_FILE, ...)
    ├─ InvalidRequestError(reason)      the user can fix the request
    │  ├─ UnknownModelError(model, available)
    │  └─ ReviewStateError(reason)      a review cannot go ahead (none, asked, decided)
    ├─ QuotaExceededError(limit, allowed, used, requested, resets_at)
    ├─ DuplicateRequestError(job_id)    a redelivered platform event; already handled
    ├─ JobNotFoundError(job_id)
    ├─ PermissionDeniedError(action)
    │  └─ ReviewNotYoursError           only the refused user may ask for a review
    ├─ ServerRulesError                 this server's moderation rules refuse the request
    │  ├─ PromptRefusedError(source, rule) the prompt (the rule is never shown)
    │  └─ ChannelNotAllowedError(allowed)  /imagine in this channel
    ├─ JobStoppedError                  the job stopped before it was charged; refunded
    │  ├─ QueueFullError(capacity)        queue_full: the scheduler's queue is full
    │  ├─ TooManyJobsError(limit)         too_many_jobs: `limit` jobs already queued or running
    │  ├─ ServerBusyError(limit)          server_busy: the server has `limit` jobs on the way
    │  ├─ JobCancelledError(job_id)       cancelled: cancelled while queued
    │  ├─ ShuttingDownError               shutdown: the process is stopping
    │  ├─ JobHandedOverError(job_id)      not refunded: another process runs the queued job
    │  ├─ JobTimeoutError(job_id, budget) job_timeout: the job's own budget, queue wait included
    │  └─ DeliveryError(detail)           delivery_failed: the platform would not take the images
    └─ ProviderError(status, request_id) provider_error:<class>; an operator fault
       ├─ ProviderTimeoutError
       ├─ ProviderUnavailableError      connection failures, 5xx after retries
       ├─ ProviderRateLimitedError(retry_after)
       │  └─ ProviderWaitTooLongError(wait) longer than the queue may be held
       ├─ ProviderQuotaError            insufficient_quota / billing_hard_limit_reached
       ├─ ProviderResponseError         malformed JSON, bytes that are not an image, dead URL
       ├─ ContentRejectedError          content_rejected; the user's to reword, not a fault
       └─ ProviderAuthError             401/403: an operator problem, logged at ERROR

An adapter that raises an error after telling the user why sets ``notified``. An error made
inside a job carries its ``job_id`` (given when it is made, else recorded once by
the service with ``in_job``), so an adapter's log line about the failure can name it.

``httpx`` exceptions are translated into this tree only in ``bot.provider.client``; nothing here
ever holds an API key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar, Self

from bot.limit import LimitName, LimitScope

__all__ = [
    "BotError",
    "ChannelNotAllowedError",
    "ConfigError",
    "ContentRejectedError",
    "DeliveryError",
    "DuplicateRequestError",
    "InvalidRequestError",
    "JobCancelledError",
    "JobHandedOverError",
    "JobNotFoundError",
    "JobStoppedError",
    "JobTimeoutError",
    "PermissionDeniedError",
    "PromptRefusedError",
    "ProviderAuthError",
    "ProviderError",
    "ProviderQuotaError",
    "ProviderRateLimitedError",
    "ProviderResponseError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "ProviderWaitTooLongError",
    "QueueFullError",
    "QuotaExceededError",
    "ReviewNotYoursError",
    "ReviewStateError",
    "ServerBusyError",
    "ServerRulesError",
    "ShuttingDownError",
    "TooManyJobsError",
    "UnknownModelError",
]


class BotError(Exception):
    """Root of every error the core raises on purpose."""

    job_id: str | None = None
    # The adapter that raised it has already told the user; nobody tells them again.
    notified: bool = False
    operator_fault: ClassVar[bool] = False
    # How loudly an adapter logs it: a user's refusal is routine, an operator fault is not.
    log_level: ClassVar[int] = logging.INFO

    @property
    def refund_reason(self) -> str:
        """What the ledger stores when a job's hold is released because of this error."""
        return f"failed:{type(self).__name__}"

    def in_job(self, job_id: str) -> Self:
        """This error, recorded as the outcome of job ``job_id``: for errors made by code that
        does not know the job (the provider, an adapter's upload). An id given when the error
        was made is kept."""
        if self.job_id is None:
            self.job_id = job_id
        return self


class ConfigError(BotError):
    """The operator's configuration is unusable; start-up stops with this message."""

    operator_fault = True
    log_level = logging.WARNING


class InvalidRequestError(BotError):
    """The request cannot run as typed; ``reason`` is one line naming the allowed values."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownModelError(InvalidRequestError):
    def __init__(self, model: str, available: Sequence[str]) -> None:
        self.model = model
        self.available = tuple(available)
        super().__init__(f"unknown model {model!r}; choose {', '.join(self.available)}")


class ReviewStateError(InvalidRequestError):
    """A review cannot go ahead as asked: there is none, no review channel, or it was already
    asked for or decided. ``reason`` is one of the ``REVIEW_*`` reasons in ``bot.messages``."""


class QuotaExceededError(BotError):
    """A hold would break ``limit`` (e.g. ``images_per_day``); nothing was reserved."""

    def __init__(
        self,
        *,
        limit: LimitName,
        allowed: int,
        used: int,
        requested: int,
        resets_at: datetime,
        scope: LimitScope = LimitScope.USER,
    ) -> None:
        super().__init__(f"{scope} limit {limit} reached: {used}+{requested} > {allowed}")
        self.limit = LimitName(limit)
        self.allowed = allowed
        self.used = used
        self.requested = requested
        self.resets_at = resets_at
        self.scope = LimitScope(scope)


class DuplicateRequestError(BotError):
    """The platform redelivered an event that already has a job; do nothing more."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"event already handled by job {job_id}")
        self.job_id = job_id


class JobNotFoundError(BotError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id}")
        self.job_id = job_id


class PermissionDeniedError(BotError):
    def __init__(self, action: str) -> None:
        super().__init__(f"not allowed: {action}")
        self.action = action


class ReviewNotYoursError(PermissionDeniedError):
    def __init__(self) -> None:
        super().__init__("ask for a review of someone else's prompt")


class ServerRulesError(BotError):
    """The server's moderation rules refuse the request; nothing was held. Adapters answer
    these with what the rules allow (the "Ask an admin" button, the allowed channels)."""


class PromptRefusedError(ServerRulesError):
    """The server's rules refuse the prompt. ``source`` is ``"filter"`` or ``"moderation"``;
    ``rule`` says what matched, for the moderation log and admins only, never the user."""

    def __init__(self, *, source: str, rule: str, review_id: str | None = None) -> None:
        super().__init__(f"prompt refused by {source}")
        self.source = source
        self.rule = rule
        self.review_id = review_id


class ChannelNotAllowedError(ServerRulesError):
    def __init__(self, allowed_channel_ids: tuple[str, ...]) -> None:
        super().__init__("not allowed in this channel")
        self.allowed_channel_ids = allowed_channel_ids


class JobStoppedError(BotError):
    """The job stopped before it was charged; its hold is refunded as ``refund_as`` says."""

    refund_as: ClassVar[str] = "stopped"

    @property
    def refund_reason(self) -> str:
        return self.refund_as


class QueueFullError(JobStoppedError):
    refund_as = "queue_full"

    def __init__(self, capacity: int, *, job_id: str | None = None) -> None:
        super().__init__(f"the queue is full ({capacity} jobs)")
        self.capacity = capacity
        self.job_id = job_id


class TooManyJobsError(JobStoppedError):
    refund_as = "too_many_jobs"

    def __init__(self, limit: int, *, job_id: str | None = None) -> None:
        super().__init__(f"already {limit} job(s) queued or running")
        self.limit = limit
        self.job_id = job_id


class ServerBusyError(JobStoppedError):
    """The member's server already has ``limit`` jobs queued or running
    (``MAX_JOBS_PER_SERVER``)."""

    refund_as = "server_busy"

    def __init__(self, limit: int, *, job_id: str | None = None) -> None:
        super().__init__(f"the server already has {limit} job(s) queued or running")
        self.limit = limit
        self.job_id = job_id


class JobCancelledError(JobStoppedError):
    refund_as = "cancelled"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id


class ShuttingDownError(JobStoppedError):
    refund_as = "shutdown"

    def __init__(self, *, job_id: str | None = None) -> None:
        super().__init__("the bot is shutting down")
        self.job_id = job_id


class JobHandedOverError(JobStoppedError):
    """This process is stopping and another process of the cluster takes the queued job over
    (``bot.cluster``): it is neither refunded nor answered here; the process that runs it
    delivers it (``bot.courier``)."""

    refund_as = "handed_over"
    notified = True  # the member hears from the process that runs the job

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was handed to another process")
        self.job_id = job_id


class JobTimeoutError(JobStoppedError):
    """The job ran past its own time budget (``budget`` seconds from its hold, queue wait
    included), whichever step it was at: not the provider's fault as such, so it is not a
    ``ProviderTimeoutError`` (the user is told the same)."""

    refund_as = "job_timeout"
    # As when it surfaced as a provider timeout: logged in full.
    operator_fault = True
    log_level = logging.WARNING

    def __init__(self, job_id: str, budget: float | None) -> None:
        super().__init__(f"job {job_id} took longer than {budget} s")
        self.job_id = job_id
        self.budget = budget


class DeliveryError(JobStoppedError):
    """The images were drawn but the platform would not take them; the job is refunded.
    ``notified`` says the adapter has already told the user why."""

    refund_as = "delivery_failed"

    def __init__(self, detail: str, *, notified: bool = False, job_id: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.notified = notified
        self.job_id = job_id


class ProviderError(BotError):
    """The image API failed. ``detail`` is safe to log: it never contains the API key."""

    operator_fault = True
    log_level = logging.WARNING

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.request_id = request_id
        self.job_id = job_id

    @property
    def refund_reason(self) -> str:
        return f"provider_error:{type(self).__name__}"


class ProviderTimeoutError(ProviderError):
    pass


class ProviderUnavailableError(ProviderError):
    pass


class ProviderRateLimitedError(ProviderError):
    def __init__(
        self,
        detail: str,
        *,
        status: int | None = 429,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail, status=status, request_id=request_id)
        self.retry_after = retry_after


class ProviderWaitTooLongError(ProviderRateLimitedError):
    """The provider asked for a wait of ``wait`` seconds, longer than the scheduler holds new
    starts for (``hold`` seconds): the job fails at once and the user is told when to retry."""

    def __init__(
        self,
        detail: str,
        *,
        wait: float,
        hold: float,
        status: int | None = 429,
        request_id: str | None = None,
    ) -> None:
        super().__init__(detail, status=status, request_id=request_id, retry_after=wait)
        self.wait = wait
        self.hold = hold


class ProviderQuotaError(ProviderError):
    pass


class ProviderResponseError(ProviderError):
    pass


class ContentRejectedError(ProviderError):
    """The provider's content policy refused the prompt: the user's to reword."""

    operator_fault = False
    log_level = logging.INFO

    @property
    def refund_reason(self) -> str:
        return "content_rejected"


class ProviderAuthError(ProviderError):
    """Our credentials were rejected: nothing works until the operator fixes them."""

    log_level = logging.ERROR

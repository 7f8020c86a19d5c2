"""The exceptions the core raises; adapters render them with ``bot.messages.describe``.

Every error carries structured fields and no user-facing wording::

    BotError
    ├─ ConfigError                      operator mistake at start-up (bad MODELS_FILE, ...)
    ├─ InvalidRequestError(reason)      the user can fix the request
    │  └─ UnknownModelError(model, available)
    ├─ QuotaExceededError(limit, allowed, used, requested, resets_at)
    ├─ DuplicateRequestError(job_id)    a redelivered platform event; already handled
    ├─ JobNotFoundError(job_id)
    ├─ PermissionDeniedError(action)
    │  └─ ReviewNotYoursError           only the refused user may ask for a review
    ├─ DeliveryError(detail)            the adapter could not post the images; refunded
    ├─ QueueFullError(capacity)         the scheduler's queue is full; nothing held
    ├─ TooManyJobsError(limit)          the user already has `limit` jobs queued or running
    ├─ JobCancelledError(job_id)        cancelled while queued; refunded
    ├─ ShuttingDownError                the process is stopping; queued jobs are refunded
    ├─ PromptRefusedError(source, rule) this server's rules refuse the prompt (rule never shown)
    ├─ ChannelNotAllowedError(allowed)  /imagine is not allowed in this channel
    └─ ProviderError(status, request_id)
       ├─ ProviderTimeoutError
       ├─ ProviderUnavailableError      connection failures, 5xx after retries
       ├─ ProviderRateLimitedError(retry_after)
       │  └─ ProviderWaitTooLongError(wait) longer than the queue may be held; refunded
       ├─ ProviderQuotaError            insufficient_quota / billing_hard_limit_reached
       ├─ ProviderResponseError         malformed JSON, bytes that are not an image, dead URL
       ├─ ContentRejectedError          content_policy_violation / moderation_blocked
       └─ ProviderAuthError             401/403: an operator problem, logged at ERROR

``httpx`` exceptions are translated into this tree only in ``bot.provider.client``; nothing here
ever holds an API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

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
    "JobNotFoundError",
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
    "ShuttingDownError",
    "TooManyJobsError",
    "UnknownModelError",
]


class BotError(Exception):
    """Root of every error the core raises on purpose. ``job_id`` is set once a job exists,
    so an adapter's log line about the failure can name it."""

    job_id: str | None = None


class ConfigError(BotError):
    """The operator's configuration is unusable; start-up stops with this message."""


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


class DeliveryError(BotError):
    """The images were drawn but the platform would not take them; the job is refunded.
    ``notified`` says the adapter has already told the user why."""

    def __init__(self, detail: str, *, notified: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.notified = notified


class QueueFullError(BotError):
    def __init__(self, capacity: int) -> None:
        super().__init__(f"the queue is full ({capacity} jobs)")
        self.capacity = capacity


class TooManyJobsError(BotError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"already {limit} job(s) queued or running")
        self.limit = limit


class JobCancelledError(BotError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id


class ShuttingDownError(BotError):
    def __init__(self) -> None:
        super().__init__("the bot is shutting down")


class PromptRefusedError(BotError):
    """The server's rules refuse the prompt. ``source`` is ``"filter"`` or ``"moderation"``;
    ``rule`` says what matched, for the moderation log and admins only, never the user."""

    def __init__(self, *, source: str, rule: str, review_id: str | None = None) -> None:
        super().__init__(f"prompt refused by {source}")
        self.source = source
        self.rule = rule
        self.review_id = review_id


class ChannelNotAllowedError(BotError):
    def __init__(self, allowed_channel_ids: tuple[str, ...]) -> None:
        super().__init__("not allowed in this channel")
        self.allowed_channel_ids = allowed_channel_ids


class ProviderError(BotError):
    """The image API failed. ``detail`` is safe to log: it never contains the API key."""

    def __init__(
        self, detail: str, *, status: int | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.request_id = request_id


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
    pass


class ProviderAuthError(ProviderError):
    pass

"""Plain frozen values that cross the boundary between the core and the adapters.

Ids are strings on every platform. Money is integer micro-dollars (1 USD = 1_000_000) so
that sums and limits are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bot.limit import LimitName

__all__ = [
    "Allowance",
    "GeneratedImage",
    "GenerationRequest",
    "GenerationResult",
    "Hold",
    "JobRecord",
    "JobState",
    "LimitUsage",
    "Limits",
    "ModelSpec",
    "ModerationEntry",
    "QueueFigures",
    "QueueStatus",
    "Requester",
    "Review",
    "ReviewState",
    "Scope",
    "ScopeKind",
    "ServerRules",
    "UsageReport",
    "UsageRow",
    "parse_size",
]


def parse_size(size: str) -> tuple[int, int]:
    """``"1024x1792"`` -> ``(1024, 1792)``; the caller has validated the format."""
    width, _, height = size.partition("x")
    return int(width), int(height)


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, and where. ``workspace_id`` is the Discord guild or Slack team ("" in DMs
    and the local shell); ``role_ids`` are the member's Discord roles, for role quotas."""

    platform: str
    workspace_id: str
    channel_id: str
    user_id: str
    role_ids: tuple[str, ...] = ()
    display_name: str = ""
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One catalog entry. ``price_micros`` is per image at 1024x1024; ``size_prices`` gives
    exact per-image prices for sizes that are not priced by megapixels."""

    id: str
    label: str
    aliases: tuple[str, ...]
    sizes: tuple[str, ...]
    max_n: int
    price_micros: int
    size_prices: tuple[tuple[str, int], ...] = ()
    supports_seed: bool = True
    supports_negative_prompt: bool = True

    @property
    def short_name(self) -> str:
        return self.aliases[0] if self.aliases else self.id

    def image_price_micros(self, size: str) -> int:
        for priced_size, micros in self.size_prices:
            if priced_size == size:
                return micros
        width, height = parse_size(size)
        return round(self.price_micros * width * height / (1024 * 1024))

    def job_price_micros(self, size: str, n: int) -> int:
        return self.image_price_micros(size) * n


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A validated request: ``model`` is a catalog id, ``size`` one of its sizes."""

    prompt: str
    model: str
    size: str
    n: int = 1
    seed: int | None = None
    negative_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    data: bytes = field(repr=False)
    mime_type: str
    width: int
    height: int
    seed: int | None = None
    revised_prompt: str | None = None

    @property
    def extension(self) -> str:
        return {"image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}.get(
            self.mime_type, "png"
        )


@dataclass(frozen=True, slots=True)
class GenerationResult:
    job_id: str
    request: GenerationRequest
    images: tuple[GeneratedImage, ...]
    cost_micros: int
    model_label: str
    preview: bool = False
    allowance: Allowance | None = None

    @property
    def seed(self) -> int | None:
        return self.request.seed

    @property
    def revised_prompt(self) -> str | None:
        return next((i.revised_prompt for i in self.images if i.revised_prompt), None)


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """Where a job stands: ``ahead`` jobs will start before it (0 and ``running`` once it has
    started); ``eta_seconds`` estimates when it will be done, from recent provider latency."""

    job_id: str
    ahead: int
    running: bool
    eta_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """The queue every process shares (PostgreSQL), for ``/metrics``: jobs waiting, provider
    calls in flight, the current cluster-wide cap and the configured one."""

    queued: int
    running: int
    concurrency: int
    max_concurrent: int


class JobState(StrEnum):
    HELD = "held"
    CHARGED = "charged"
    REFUNDED = "refunded"


@dataclass(frozen=True, slots=True)
class Hold:
    """The ledger's answer to a hold: ``duplicate`` means the event id was seen before and
    ``job_id`` is that earlier job; nothing new was reserved."""

    job_id: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class JobRecord:
    """Everything needed to show or repeat a job after a restart."""

    job_id: str
    requester: Requester
    request: GenerationRequest
    state: JobState
    held_micros: int
    held_images: int
    charged_micros: int
    charged_images: int
    created_at: datetime
    finished_at: datetime | None = None
    event_id: str | None = None
    refund_reason: str | None = None


class ScopeKind(StrEnum):
    GLOBAL = "global"
    WORKSPACE = "workspace"
    ROLE = "role"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a limit applies: a workspace default (``subject_id`` empty), a role or a user."""

    kind: ScopeKind
    platform: str = ""
    workspace_id: str = ""
    subject_id: str = ""


@dataclass(frozen=True, slots=True)
class Limits:
    """Each limit is optional; ``None`` means unlimited at this scope."""

    images_per_day: int | None = None
    images_per_month: int | None = None
    usd_micros_per_month: int | None = None

    @property
    def empty(self) -> bool:
        return (
            self.images_per_day is None
            and self.images_per_month is None
            and self.usd_micros_per_month is None
        )


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """One applicable limit and its usage in the current window."""

    name: LimitName
    allowed: int
    used: int
    resets_at: datetime

    def __post_init__(self) -> None:
        # Accept the stored spelling too (``"images_per_day"``): it is the same limit.
        object.__setattr__(self, "name", LimitName(self.name))

    @property
    def remaining(self) -> int:
        return max(0, self.allowed - self.used)


@dataclass(frozen=True, slots=True)
class Allowance:
    """What a requester may still spend; an empty ``limits`` means unlimited."""

    limits: tuple[LimitUsage, ...] = ()

    def get(self, name: str) -> LimitUsage | None:
        return next((u for u in self.limits if u.name == name), None)


@dataclass(frozen=True, slots=True)
class UsageRow:
    day: str
    platform: str
    workspace_id: str
    user_id: str
    model: str
    images: int
    usd_micros: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    since: datetime
    until: datetime
    rows: tuple[UsageRow, ...]

    @property
    def total_images(self) -> int:
        return sum(r.images for r in self.rows)

    @property
    def total_micros(self) -> int:
        return sum(r.usd_micros for r in self.rows)


@dataclass(frozen=True, slots=True)
class ServerRules:
    """A server's moderation settings. ``allowed_channel_ids`` empty: /imagine works in every
    channel. ``spoilers``: on Discord, images are posted as spoilers outside NSFW channels."""

    platform: str
    workspace_id: str
    blocked_terms: tuple[str, ...] = ()
    blocked_patterns: tuple[str, ...] = ()
    review_channel_id: str | None = None
    allowed_channel_ids: tuple[str, ...] = ()
    spoilers: bool = False


class ReviewState(StrEnum):
    """``refused`` -> ``pending`` (the user asked an admin) -> ``approved`` | ``denied``."""

    REFUSED = "refused"
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class Review:
    """A refused prompt that an admin may approve. ``source`` is ``"filter"`` or
    ``"moderation"``; ``rule`` says what matched (admins only); ``decided_by`` is the deciding
    admin's user id."""

    review_id: str
    requester: Requester
    request: GenerationRequest
    rule: str
    source: str
    state: ReviewState
    created_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ModerationEntry:
    """One refusal in the moderation log."""

    at: datetime
    platform: str
    workspace_id: str
    channel_id: str
    user_id: str
    prompt: str
    negative_prompt: str | None
    source: str
    rule: str
    review_id: str | None = None

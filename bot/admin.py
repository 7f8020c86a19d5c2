"""Quota administration for the chat adapters: thin, permission-checked calls into the ledger.

Adapters decide whether a member is an admin (Discord: Manage Server; Slack:
``SLACK_ADMIN_USER_IDS`` or workspace admin/owner) and say so in ``Requester.is_admin``; this
module enforces it. An admin acts only on their own platform and workspace: every scope and
member they name must be in ``actor``'s workspace, else ``PermissionDeniedError``. Every change
is audited by the ledger with the actor as ``"<platform>:<user id>"``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping
from datetime import UTC, timedelta

from bot.amount import check_limits, check_usd_micros
from bot.errors import InvalidRequestError, PermissionDeniedError
from bot.limit import LimitName
from bot.messages import ADMIN_NO_LIMITS
from bot.models import Allowance, Limits, Requester, Scope, ScopeKind, UsageReport
from bot.money import usd_text
from bot.store.ledger import AuditEntry, Clock, Ledger

__all__ = [
    "CSV_COLUMNS",
    "QuotaAdmin",
    "actor_name",
    "csv_name",
    "listed_admin",
    "scope_in",
    "to_csv",
]

log = logging.getLogger(__name__)

CSV_COLUMNS = ("day", "platform", "workspace_id", "user_id", "model", "images", "usd")


def actor_name(actor: Requester) -> str:
    """How an admin appears in the audit log."""
    return f"{actor.platform}:{actor.user_id}"


def listed_admin(
    entries: frozenset[str], *, workspace_id: str, home_workspace: str, user_id: str
) -> bool:
    """Whether an operator's admin list (``SLACK_ADMIN_USER_IDS``) names ``user_id`` in
    ``workspace_id``: ``T123:U456`` names a user of one workspace; a bare ``U456`` names that
    user in ``home_workspace`` only (the workspace the bot's token belongs to), never in a
    workspace the operator did not name."""
    if f"{workspace_id}:{user_id}" in entries:
        return True
    return bool(home_workspace) and workspace_id == home_workspace and user_id in entries


def scope_in(actor: Requester, *, user_id: str | None = None, role_id: str | None = None) -> Scope:
    """The scope of a user, a role, or (with neither) the workspace default, in the actor's
    own workspace."""
    if user_id and role_id:
        raise ValueError("a scope is a user or a role, not both")
    if user_id:
        return Scope(ScopeKind.USER, actor.platform, actor.workspace_id, user_id)
    if role_id:
        return Scope(ScopeKind.ROLE, actor.platform, actor.workspace_id, role_id)
    return Scope(ScopeKind.WORKSPACE, actor.platform, actor.workspace_id)


def csv_name(report: UsageReport) -> str:
    """The file name a usage report's CSV is posted under, on every platform."""
    return f"imagine-usage-{report.since:%Y%m%d}-{report.until:%Y%m%d}.csv"


def to_csv(report: UsageReport) -> str:
    """The report as CSV text with a header row: day, platform, workspace_id, user_id, model,
    images, usd (exact decimal dollars)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        writer.writerow(
            (
                row.day,
                row.platform,
                row.workspace_id,
                row.user_id,
                row.model,
                row.images,
                usd_text(row.usd_micros),
            )
        )
    return out.getvalue()


class QuotaAdmin:
    """The admin API the adapters call. Each method takes the acting ``Requester``."""

    def __init__(self, ledger: Ledger, *, clock: Clock | None = None) -> None:
        self.ledger = ledger
        # The ledger's clock by default: "the last 7 days" then agree with the days it stamps.
        self._clock = clock or ledger.now

    def _check(self, actor: Requester, action: str, scope: Scope | None = None) -> None:
        if not actor.is_admin:
            raise PermissionDeniedError(action)
        if scope is not None and (
            scope.kind is ScopeKind.GLOBAL
            or scope.platform != actor.platform
            or scope.workspace_id != actor.workspace_id
        ):
            # Another server's settings, or the global defaults (environment only).
            raise PermissionDeniedError(action)

    async def quota(self, actor: Requester, scope: Scope) -> Limits:
        """What is set at exactly ``scope`` (``None`` fields: inherited)."""
        self._check(actor, "view quotas", scope)
        return await self.ledger.limits(scope)

    async def change_quota(
        self, actor: Requester, scope: Scope, changes: Mapping[LimitName, int | None]
    ) -> Limits:
        """Change only the limits named at ``scope`` (``None``: unset one, so the next scope's
        value applies), atomically; returns what is set there now. Every platform's
        ``set-quota`` is this call."""
        self._check(actor, "change quotas", scope)
        if not changes:
            raise InvalidRequestError(ADMIN_NO_LIMITS)
        check_limits(Limits(**{str(name): value for name, value in changes.items()}))
        return await self.ledger.change_limits(scope, changes, actor=actor_name(actor))

    async def clear_quota(self, actor: Requester, scope: Scope) -> None:
        self._check(actor, "change quotas", scope)
        await self.ledger.clear_limits(scope, actor=actor_name(actor))

    async def spend_cap(self, actor: Requester) -> int | None:
        self._check(actor, "view the spend cap")
        return await self.ledger.spend_cap(platform=actor.platform, workspace_id=actor.workspace_id)

    async def set_spend_cap(self, actor: Requester, usd_micros: int | None) -> None:
        """Set (``None``: remove) the server-wide monthly spend cap of the actor's server."""
        self._check(actor, "change the spend cap")
        if usd_micros is not None:
            check_usd_micros(usd_micros, name="spend cap")
        await self.ledger.set_spend_cap(
            platform=actor.platform,
            workspace_id=actor.workspace_id,
            usd_micros=usd_micros,
            actor=actor_name(actor),
        )

    async def allowance(self, actor: Requester, member: Requester) -> Allowance:
        """A member's limits, usage and resets (``member`` carries their roles)."""
        self._check(actor, "view members' quotas", scope_in(member))
        return await self.ledger.allowance(member)

    async def usage_report(self, actor: Requester, days: int = 30) -> UsageReport:
        """Charged usage in the actor's server over the last ``days`` UTC days (today
        included), by day, user and model."""
        self._check(actor, "view usage")
        if days < 1:
            raise ValueError("days must be at least 1")
        today = self._clock().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return await self.ledger.usage(
            since=today - timedelta(days=days - 1),
            platform=actor.platform,
            workspace_id=actor.workspace_id,
        )

    async def audit_log(self, actor: Requester, limit: int = 20) -> tuple[AuditEntry, ...]:
        """The latest quota changes in the actor's server, newest first."""
        self._check(actor, "view the audit log")
        return await self.ledger.audit_log(
            platform=actor.platform, workspace_id=actor.workspace_id, limit=limit
        )

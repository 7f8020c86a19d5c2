"""Moderation storage: the ``ModerationStore`` interface and ``SqliteModerationStore``, on the
ledger's SQLite database (schema version 2, ``bot.store.schema``).

A store changes state only with single statements: a review moves
``refused -> pending -> approved | denied`` through one conditional ``UPDATE``, so two admins
pressing Approve at once cannot both win. Audit rows (who, when, what) and moderation log rows
are written inside those statements (by trigger, on SQLite).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal, Protocol

from bot.models import (
    GenerationRequest,
    ModerationEntry,
    Requester,
    Review,
    ReviewState,
    ServerRules,
)
from bot.store.ledger import SqliteLedger
from bot.store.row import (
    MODERATION_LOG_COLUMNS,
    REVIEW_COLUMNS,
    moderation_entry,
    review_from_row,
    role_ids_text,
    stamp,
)

__all__ = [
    "ModerationStore",
    "RuleKind",
    "SqliteModerationStore",
    "Statement",
    "decision",
    "first_review",
    "new_review",
    "review_values",
]

log = logging.getLogger(__name__)

RuleKind = Literal["term", "pattern", "channel"]

Statement = Callable[[str, Mapping[str, Any] | Sequence[Any]], Awaitable[list[Any]]]
"""Runs one SQL statement on the shared connection and returns its rows
(``SqliteLedger.execute``)."""


class ModerationStore(Protocol):
    """Per-server rules, reviews and the moderation log. Every change is one atomic step and
    is audited with its ``actor``."""

    def now(self) -> datetime:
        """The store's clock (the ledger's), as an aware UTC datetime."""
        ...

    async def rules(self, platform: str, workspace_id: str) -> ServerRules:
        """The server's active rules and settings (empty rules when it has none)."""
        ...

    async def count_rules(self, platform: str, workspace_id: str, kind: RuleKind) -> int: ...

    async def add_rule(
        self, platform: str, workspace_id: str, kind: RuleKind, value: str, *, actor: str
    ) -> bool:
        """Add (or re-activate) a rule; ``False`` when it was already there (nothing audited)."""
        ...

    async def remove_rule(
        self, platform: str, workspace_id: str, kind: RuleKind, value: str, *, actor: str
    ) -> bool:
        """Deactivate a rule; ``False`` when there was no such active rule."""
        ...

    async def set_review_channel(
        self, platform: str, workspace_id: str, channel_id: str | None, *, actor: str
    ) -> None: ...

    async def set_spoilers(
        self, platform: str, workspace_id: str, on: bool, *, actor: str
    ) -> None: ...

    async def record_refusal(
        self, request: GenerationRequest, requester: Requester, *, source: str, rule: str
    ) -> Review:
        """A new review in state ``refused``, and its moderation log row, in one step."""
        ...

    async def review(self, review_id: str) -> Review | None: ...

    async def mark_pending(self, review_id: str) -> Review | None:
        """refused -> pending; ``None`` when the review is not in state ``refused``."""
        ...

    async def mark_refused(self, review_id: str) -> bool:
        """pending -> refused again; ``False`` when the review is not pending."""
        ...

    async def decide(self, review_id: str, *, approve: bool, decided_by: str) -> Review | None:
        """pending -> approved | denied (audited); ``None`` when not pending."""
        ...

    async def log(
        self, platform: str, workspace_id: str, *, since: datetime, limit: int = 50
    ) -> tuple[ModerationEntry, ...]:
        """Refusals in one server since ``since``, newest first."""
        ...


class SqliteModerationStore:
    """The ``ModerationStore`` in the ledger's SQLite database, on its one connection:
    ``execute`` runs a statement there (``SqliteLedger.execute``), ``clock`` is the ledger's
    (``SqliteLedger.now``). Built by ``bot.store.database.open_store``."""

    def __init__(self, execute: Statement, clock: Callable[[], datetime]) -> None:
        self._execute = execute
        self._clock = clock

    @classmethod
    def on(cls, ledger: SqliteLedger) -> SqliteModerationStore:
        """The moderation store in ``ledger``'s database, on its connection and clock."""
        return cls(ledger.execute, ledger.now)

    def now(self) -> datetime:
        return self._clock()

    async def _rows(self, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> list[Any]:
        return await self._execute(sql, params)

    # --- rules ---------------------------------------------------------------------------

    async def rules(self, platform: str, workspace_id: str) -> ServerRules:
        where = {"platform": platform, "workspace": workspace_id}
        entries = await self._rows(
            """
            SELECT kind, value FROM moderation_rules
            WHERE platform = :platform AND workspace_id = :workspace AND active = 1
            ORDER BY kind, value
            """,
            where,
        )
        settings = await self._rows(
            """
            SELECT review_channel_id, spoilers FROM moderation_settings
            WHERE platform = :platform AND workspace_id = :workspace
            """,
            where,
        )
        review_channel, spoilers = settings[0] if settings else (None, 0)
        return ServerRules(
            platform=platform,
            workspace_id=workspace_id,
            blocked_terms=tuple(v for k, v in entries if k == "term"),
            blocked_patterns=tuple(v for k, v in entries if k == "pattern"),
            review_channel_id=review_channel,
            allowed_channel_ids=tuple(v for k, v in entries if k == "channel"),
            spoilers=bool(spoilers),
        )

    async def count_rules(self, platform: str, workspace_id: str, kind: RuleKind) -> int:
        rows = await self._rows(
            """
            SELECT count(*) FROM moderation_rules
            WHERE platform = ? AND workspace_id = ? AND kind = ? AND active = 1
            """,
            (platform, workspace_id, kind),
        )
        return int(rows[0][0])

    async def add_rule(
        self, platform: str, workspace_id: str, kind: RuleKind, value: str, *, actor: str
    ) -> bool:
        """Add (or re-activate) a rule; ``False`` when it was already there (nothing audited)."""
        rows = await self._rows(
            """
            INSERT INTO moderation_rules (platform, workspace_id, kind, value, active,
                                          updated_at, updated_by)
            VALUES (:platform, :workspace, :kind, :value, 1, :at, :actor)
            ON CONFLICT DO UPDATE SET active = 1, updated_at = excluded.updated_at,
                updated_by = excluded.updated_by
            WHERE active = 0
            RETURNING value
            """,
            {
                "platform": platform,
                "workspace": workspace_id,
                "kind": kind,
                "value": value,
                "at": stamp(self.now()),
                "actor": actor,
            },
        )
        return bool(rows)

    async def remove_rule(
        self, platform: str, workspace_id: str, kind: RuleKind, value: str, *, actor: str
    ) -> bool:
        """Deactivate a rule; ``False`` when there was no such active rule."""
        rows = await self._rows(
            """
            UPDATE moderation_rules SET active = 0, updated_at = :at, updated_by = :actor
            WHERE platform = :platform AND workspace_id = :workspace AND kind = :kind
              AND value = :value AND active = 1
            RETURNING value
            """,
            {
                "platform": platform,
                "workspace": workspace_id,
                "kind": kind,
                "value": value,
                "at": stamp(self.now()),
                "actor": actor,
            },
        )
        return bool(rows)

    async def set_review_channel(
        self, platform: str, workspace_id: str, channel_id: str | None, *, actor: str
    ) -> None:
        await self._rows(
            """
            INSERT INTO moderation_settings (platform, workspace_id, review_channel_id,
                                             updated_at, updated_by)
            VALUES (:platform, :workspace, :channel, :at, :actor)
            ON CONFLICT DO UPDATE SET review_channel_id = excluded.review_channel_id,
                updated_at = excluded.updated_at, updated_by = excluded.updated_by
            WHERE review_channel_id IS NOT excluded.review_channel_id
            """,
            {
                "platform": platform,
                "workspace": workspace_id,
                "channel": channel_id,
                "at": stamp(self.now()),
                "actor": actor,
            },
        )

    async def set_spoilers(self, platform: str, workspace_id: str, on: bool, *, actor: str) -> None:
        await self._rows(
            """
            INSERT INTO moderation_settings (platform, workspace_id, spoilers, updated_at,
                                             updated_by)
            VALUES (:platform, :workspace, :on, :at, :actor)
            ON CONFLICT DO UPDATE SET spoilers = excluded.spoilers,
                updated_at = excluded.updated_at, updated_by = excluded.updated_by
            WHERE spoilers <> excluded.spoilers
            """,
            {
                "platform": platform,
                "workspace": workspace_id,
                "on": int(on),
                "at": stamp(self.now()),
                "actor": actor,
            },
        )

    # --- refusals and reviews ------------------------------------------------------------

    async def record_refusal(
        self, request: GenerationRequest, requester: Requester, *, source: str, rule: str
    ) -> Review:
        """A new review in state ``refused`` and (by trigger, same statement) its log row."""
        review = new_review(request, requester, source=source, rule=rule, now=self.now())
        await self._rows(
            """
            INSERT INTO reviews (review_id, platform, workspace_id, channel_id, user_id,
                                 role_ids, display_name, prompt, negative_prompt, model, size,
                                 n, seed, source, rule, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            review_values(review),
        )
        return review

    async def review(self, review_id: str) -> Review | None:
        rows = await self._rows(
            f"SELECT {REVIEW_COLUMNS} FROM reviews WHERE review_id = ?", (review_id,)
        )
        return first_review(rows)

    async def mark_pending(self, review_id: str) -> Review | None:
        """refused -> pending; ``None`` when the review is not in state ``refused``."""
        rows = await self._rows(
            f"""
            UPDATE reviews SET state = 'pending', requested_at = :at
            WHERE review_id = :review_id AND state = 'refused'
            RETURNING {REVIEW_COLUMNS}
            """,
            {"review_id": review_id, "at": stamp(self.now())},
        )
        return first_review(rows)

    async def mark_refused(self, review_id: str) -> bool:
        """pending -> refused again (the request never reached the admins); False when the
        review is not pending."""
        rows = await self._rows(
            """
            UPDATE reviews SET state = 'refused', requested_at = NULL
            WHERE review_id = :review_id AND state = 'pending'
            RETURNING review_id
            """,
            {"review_id": review_id},
        )
        return bool(rows)

    async def decide(self, review_id: str, *, approve: bool, decided_by: str) -> Review | None:
        """pending -> approved | denied (audited by trigger); ``None`` when not pending."""
        rows = await self._rows(
            f"""
            UPDATE reviews SET state = :state, decided_by = :by, decided_at = :at
            WHERE review_id = :review_id AND state = 'pending'
            RETURNING {REVIEW_COLUMNS}
            """,
            {
                "review_id": review_id,
                "state": decision(approve),
                "by": decided_by,
                "at": stamp(self.now()),
            },
        )
        return first_review(rows)

    async def log(
        self, platform: str, workspace_id: str, *, since: datetime, limit: int = 50
    ) -> tuple[ModerationEntry, ...]:
        """Refusals in one server since ``since``, newest first."""
        rows = await self._rows(
            f"""
            SELECT {MODERATION_LOG_COLUMNS} FROM moderation_log
            WHERE platform = :platform AND workspace_id = :workspace AND at >= :since
            ORDER BY at DESC, id DESC LIMIT :limit
            """,
            {
                "platform": platform,
                "workspace": workspace_id,
                "since": stamp(since),
                "limit": limit,
            },
        )
        return tuple(moderation_entry(row) for row in rows)


def new_review(
    request: GenerationRequest, requester: Requester, *, source: str, rule: str, now: datetime
) -> Review:
    """A refusal's review, as either backend's ``record_refusal`` stores it (admin rights are
    never stored)."""
    return Review(
        review_id=uuid.uuid4().hex,
        requester=replace(requester, is_admin=False),
        request=request,
        rule=rule,
        source=source,
        state=ReviewState.REFUSED,
        created_at=now,
    )


def review_values(review: Review) -> tuple[Any, ...]:
    """A new review's columns, in the order either backend's ``INSERT INTO reviews`` names
    them."""
    requester, request = review.requester, review.request
    return (
        review.review_id,
        requester.platform,
        requester.workspace_id,
        requester.channel_id,
        requester.user_id,
        role_ids_text(requester.role_ids),
        requester.display_name,
        request.prompt,
        request.negative_prompt,
        request.model,
        request.size,
        request.n,
        request.seed,
        review.source,
        review.rule,
        stamp(review.created_at),
    )


def first_review(rows: Sequence[Sequence[Any]]) -> Review | None:
    """The review a statement returned (``REVIEW_COLUMNS``), if it matched one."""
    return review_from_row(rows[0]) if rows else None


def decision(approve: bool) -> str:
    """The state a decision moves a pending review to, as the ``state`` column holds it."""
    return (ReviewState.APPROVED if approve else ReviewState.DENIED).value

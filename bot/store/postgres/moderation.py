"""The moderation store on PostgreSQL: ``bot.store.moderation.ModerationStore`` on the ledger's
database, through its asyncpg pool (tables: ``bot.store.postgres.moderation_schema``).

Every state change is one statement, so it is atomic on its own and needs no transaction:
audit and log rows are written by trigger inside it. A review moves
``refused -> pending -> approved | denied`` through one conditional ``UPDATE``: when two
processes decide one review at once, the second waits for the first's row lock, re-reads the
row (PostgreSQL re-checks ``WHERE state = 'pending'`` on the updated version under READ
COMMITTED) and updates nothing, so exactly one decision wins and is audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.models import GenerationRequest, ModerationEntry, Requester, Review, ServerRules
from bot.store.ledger import Clock
from bot.store.moderation import RuleKind, decision, first_review, new_review, review_values
from bot.store.postgres.connection import Pool
from bot.store.postgres.ledger import PostgresLedger
from bot.store.row import MODERATION_LOG_COLUMNS, REVIEW_COLUMNS, moderation_entry, stamp

__all__ = ["PostgresModerationStore"]

_Record = Any
"""An ``asyncpg.Record`` (untyped): read as soon as it is fetched."""


class PostgresModerationStore:
    """The ``ModerationStore`` in the ledger's PostgreSQL database. ``pool`` is the ledger's
    asyncpg pool (closed with the ledger), ``clock`` the ledger's clock. Built by
    ``bot.store.database.open_store`` through ``on``."""

    def __init__(self, pool: Pool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock

    @classmethod
    def on(cls, ledger: PostgresLedger) -> PostgresModerationStore:
        """The moderation store in ``ledger``'s database, on its pool and clock."""
        return cls(ledger.pool, ledger.now)

    def now(self) -> datetime:
        return self._clock()

    async def _fetch(self, sql: str, *args: object) -> list[_Record]:
        rows: list[_Record] = await self._pool.fetch(sql, *args)
        return rows

    # --- rules ---------------------------------------------------------------------------

    async def rules(self, platform: str, workspace_id: str) -> ServerRules:
        # One statement, so the rules and the settings come from one snapshot.
        rows = await self._fetch(
            """
            SELECT s.review_channel_id, coalesce(s.spoilers, 0) AS spoilers,
                   array(SELECT value FROM moderation_rules
                         WHERE platform = $1 AND workspace_id = $2 AND kind = 'term'
                           AND active = 1 ORDER BY value) AS terms,
                   array(SELECT value FROM moderation_rules
                         WHERE platform = $1 AND workspace_id = $2 AND kind = 'pattern'
                           AND active = 1 ORDER BY value) AS patterns,
                   array(SELECT value FROM moderation_rules
                         WHERE platform = $1 AND workspace_id = $2 AND kind = 'channel'
                           AND active = 1 ORDER BY value) AS channels
            FROM (SELECT 1) AS one
            LEFT JOIN moderation_settings AS s ON s.platform = $1 AND s.workspace_id = $2
            """,
            platform,
            workspace_id,
        )
        row = rows[0]
        return ServerRules(
            platform=platform,
            workspace_id=workspace_id,
            blocked_terms=tuple(row["terms"]),
            blocked_patterns=tuple(row["patterns"]),
            review_channel_id=row["review_channel_id"],
            allowed_channel_ids=tuple(row["channels"]),
            spoilers=bool(row["spoilers"]),
        )

    async def count_rules(self, platform: str, workspace_id: str, kind: RuleKind) -> int:
        rows = await self._fetch(
            """
            SELECT count(*) AS rules FROM moderation_rules
            WHERE platform = $1 AND workspace_id = $2 AND kind = $3 AND active = 1
            """,
            platform,
            workspace_id,
            kind,
        )
        return int(rows[0]["rules"])

    async def add_rule(
        self, platform: str, workspace_id: str, kind: RuleKind, value: str, *, actor: str
    ) -> bool:
        """Add (or re-activate) a rule; ``False`` when it was already there (nothing audited)."""
        rows = await self._fetch(
            """
            INSERT INTO moderation_rules AS r (platform, workspace_id, kind, value, active,
                                               updated_at, updated_by)
            VALUES ($1, $2, $3, $4, 1, $5, $6)
            ON CONFLICT (platform, workspace_id, kind, value) DO UPDATE
                SET active = 1, updated_at = excluded.updated_at,
                    updated_by = excluded.updated_by
                WHERE r.active = 0
            RETURNING value
            """,
            platform,
            workspace_id,
            kind,
            value,
            stamp(self.now()),
            actor,
        )
        return bool(rows)

    async def remove_rule(
        self, platform: str, workspace_id: str, kind: RuleKind, value: str, *, actor: str
    ) -> bool:
        """Deactivate a rule; ``False`` when there was no such active rule."""
        rows = await self._fetch(
            """
            UPDATE moderation_rules SET active = 0, updated_at = $5, updated_by = $6
            WHERE platform = $1 AND workspace_id = $2 AND kind = $3 AND value = $4
              AND active = 1
            RETURNING value
            """,
            platform,
            workspace_id,
            kind,
            value,
            stamp(self.now()),
            actor,
        )
        return bool(rows)

    async def set_review_channel(
        self, platform: str, workspace_id: str, channel_id: str | None, *, actor: str
    ) -> None:
        await self._fetch(
            """
            INSERT INTO moderation_settings AS s (platform, workspace_id, review_channel_id,
                                                  updated_at, updated_by)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (platform, workspace_id) DO UPDATE
                SET review_channel_id = excluded.review_channel_id,
                    updated_at = excluded.updated_at, updated_by = excluded.updated_by
                WHERE s.review_channel_id IS DISTINCT FROM excluded.review_channel_id
            """,
            platform,
            workspace_id,
            channel_id,
            stamp(self.now()),
            actor,
        )

    async def set_spoilers(self, platform: str, workspace_id: str, on: bool, *, actor: str) -> None:
        await self._fetch(
            """
            INSERT INTO moderation_settings AS s (platform, workspace_id, spoilers,
                                                  updated_at, updated_by)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (platform, workspace_id) DO UPDATE
                SET spoilers = excluded.spoilers,
                    updated_at = excluded.updated_at, updated_by = excluded.updated_by
                WHERE s.spoilers <> excluded.spoilers
            """,
            platform,
            workspace_id,
            int(on),
            stamp(self.now()),
            actor,
        )

    # --- refusals and reviews ------------------------------------------------------------

    async def record_refusal(
        self, request: GenerationRequest, requester: Requester, *, source: str, rule: str
    ) -> Review:
        """A new review in state ``refused`` and (by trigger, same statement) its log row."""
        review = new_review(request, requester, source=source, rule=rule, now=self.now())
        await self._fetch(
            """
            INSERT INTO reviews (review_id, platform, workspace_id, channel_id, user_id,
                                 role_ids, display_name, prompt, negative_prompt, model, size,
                                 n, seed, source, rule, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
            """,
            *review_values(review),
        )
        return review

    async def review(self, review_id: str) -> Review | None:
        rows = await self._fetch(
            f"SELECT {REVIEW_COLUMNS} FROM reviews WHERE review_id = $1", review_id
        )
        return first_review(rows)

    async def mark_pending(self, review_id: str) -> Review | None:
        """refused -> pending; ``None`` when the review is not in state ``refused``."""
        rows = await self._fetch(
            f"""
            UPDATE reviews SET state = 'pending', requested_at = $2
            WHERE review_id = $1 AND state = 'refused'
            RETURNING {REVIEW_COLUMNS}
            """,
            review_id,
            stamp(self.now()),
        )
        return first_review(rows)

    async def mark_refused(self, review_id: str) -> bool:
        """pending -> refused again (the request never reached the admins); False when the
        review is not pending."""
        rows = await self._fetch(
            """
            UPDATE reviews SET state = 'refused', requested_at = NULL
            WHERE review_id = $1 AND state = 'pending'
            RETURNING review_id
            """,
            review_id,
        )
        return bool(rows)

    async def decide(self, review_id: str, *, approve: bool, decided_by: str) -> Review | None:
        """pending -> approved | denied (audited by trigger); ``None`` when not pending, or
        when another process decided it first."""
        rows = await self._fetch(
            f"""
            UPDATE reviews SET state = $2, decided_by = $3, decided_at = $4
            WHERE review_id = $1 AND state = 'pending'
            RETURNING {REVIEW_COLUMNS}
            """,
            review_id,
            decision(approve),
            decided_by,
            stamp(self.now()),
        )
        return first_review(rows)

    async def log(
        self, platform: str, workspace_id: str, *, since: datetime, limit: int = 50
    ) -> tuple[ModerationEntry, ...]:
        """Refusals in one server since ``since``, newest first."""
        rows = await self._fetch(
            f"""
            SELECT {MODERATION_LOG_COLUMNS} FROM moderation_log
            WHERE platform = $1 AND workspace_id = $2 AND at >= $3
            ORDER BY at DESC, id DESC LIMIT $4
            """,
            platform,
            workspace_id,
            stamp(since),
            limit,
        )
        return tuple(moderation_entry(row) for row in rows)

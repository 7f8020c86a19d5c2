"""The ``Ledger`` on PostgreSQL (``PostgresLedger``), for several bot processes on one database.

The rules are ``bot.store.ledger``'s (its module docstring), and so is everything around the
SQL, which this module reuses: the boot, lease and closing plumbing (``_LedgerBase``), the
argument checks, row readings, log lines and refusals. What differs is the dialect, and how
writers are kept apart:

Holds
    PostgreSQL does not serialise writers the way SQLite does: two processes checking a limit
    at once would both see room, and both insert. So a hold is one transaction that first takes
    a transaction-scoped advisory lock on its workspace (every limit, the server cap included,
    counts usage within one workspace), then inserts the job only if it fits, and when nothing
    was inserted reads the known event or the broken limit in that same transaction. Under READ
    COMMITTED each statement after the lock sees every hold committed before it. Settling takes
    no workspace lock: it only gives usage back.

Claims
    The orphan sweep and the notice claims pick rows with ``FOR UPDATE SKIP LOCKED``, so
    processes sweeping at once never wait on or repeat each other's rows. The sweep refunds one
    job per statement: a statement refunding several jobs would lock several users' counters
    and then the workspace's, in an order a concurrent hold could cross (``schema`` keeps each
    job's own counter locks in one order).

The moderation store and the cluster job queue share the pool: ``pool``, ``execute`` and
``transaction``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.limit import LimitName
from bot.models import GenerationRequest, Hold, Limits, Requester, Scope
from bot.store.copy import backup_postgres
from bot.store.lease import INTERRUPTED, LEASE
from bot.store.ledger import (
    _AUDIT_COLUMNS,
    DEFAULT_JOB_TIMEOUT,
    Clock,
    Interrupted,
    _check_charge,
    _check_limits,
    _duplicate,
    _held,
    _interrupted,
    _LedgerBase,
    _log_open,
    _log_orphans,
    _not_charged,
    _not_refunded,
    _periods,
    _refunded,
    _refusal,
    _State,
    _system_clock,
    _unique,
)
from bot.store.postgres.connection import Connection, Pool, open_pool, redact_url
from bot.store.postgres.schema import migrate
from bot.store.row import JOB_COLUMNS, stamp

__all__ = ["PostgresLedger"]

# The parameters every state query starts with ($1-$9): who, the window keys, the defaults.
_IN_WORKSPACE = "platform = $1 AND workspace_id = $2"


def _effective(field: str) -> str:
    """One field's effective limit: user > most generous role > workspace > global."""
    default = {"images_per_day": "$7", "images_per_month": "$8", "usd_micros_per_month": "$9"}
    return f"""coalesce(
        (SELECT {field} FROM limits WHERE {_IN_WORKSPACE}
            AND kind = 'user' AND subject_id = $3),
        (SELECT max({field}) FROM limits WHERE {_IN_WORKSPACE}
            AND kind = 'role' AND subject_id = ANY($4::text[])),
        (SELECT {field} FROM limits WHERE {_IN_WORKSPACE}
            AND kind = 'workspace' AND subject_id = ''),
        {default[field]}::bigint
    ) AS {field}"""


def _counter(column: str, period: str) -> str:
    return f"""coalesce((SELECT {column} FROM usage_counters WHERE {_IN_WORKSPACE}
        AND user_id = $3 AND period = {period}::text), 0)"""


_STATE = f"""
    SELECT
        {_effective("images_per_day")},
        {_effective("images_per_month")},
        {_effective("usd_micros_per_month")},
        (SELECT usd_micros_per_month FROM spend_caps WHERE {_IN_WORKSPACE}) AS server_cap,
        {_counter("images", "$5")} AS day_images,
        {_counter("images", "$6")} AS month_images,
        {_counter("micros", "$6")} AS month_micros,
        coalesce((SELECT micros FROM workspace_counters WHERE {_IN_WORKSPACE}
                  AND period = $6::text), 0) AS server_micros
"""

# The check, the insert and the state it was decided on, in one statement (one snapshot): a
# settlement committing meanwhile (settling takes no workspace lock) cannot make the refusal's
# reason disagree with the decision. $18 is the number of images, $21 the cost.
_HOLD = f"""
    WITH s AS ({_STATE}),
    inserted AS (
        INSERT INTO jobs (
            job_id, event_id, platform, workspace_id, channel_id, user_id, role_ids,
            display_name, prompt, model, size, n, seed, negative_prompt,
            held_images, held_micros, day, month, created_at, owner, deadline, reach
        )
        SELECT
            $10::text, $11::text, $1::text, $2::text, $12::text, $3::text, $13::text,
            $14::text, $15::text, $16::text, $17::text, $18::bigint, $19::bigint, $20::text,
            $18::bigint, $21::bigint, $22::text, $23::text, $24::text, $25::text, $26::text,
            $27::text
        FROM s
        WHERE (s.images_per_day IS NULL OR s.day_images + $18::bigint <= s.images_per_day)
          AND (s.images_per_month IS NULL
               OR s.month_images + $18::bigint <= s.images_per_month)
          AND ($21::bigint = 0 OR s.usd_micros_per_month IS NULL
               OR s.month_micros + $21::bigint <= s.usd_micros_per_month)
          AND ($21::bigint = 0 OR s.server_cap IS NULL
               OR s.server_micros + $21::bigint <= s.server_cap)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING job_id
    )
    SELECT s.*, (SELECT job_id FROM inserted) AS job_id FROM s
"""

# A held job no process will settle ($1: now, $2: this boot): no owner, past its own deadline,
# or owned by a boot that stopped or whose lease ran out (never the sweeping process's own).
# A job still in the cluster's queue (bot.cluster) is not an orphan while its deadline holds:
# another process takes it over instead.
_ORPHAN = """
    state = 'held' AND (
        deadline < $1::text
        OR (
            NOT EXISTS (SELECT 1 FROM queue WHERE queue.job_id = jobs.job_id)
            AND (
                owner IS NULL
                OR owner IN (
                    SELECT boot_id FROM boots
                    WHERE (stopped_at IS NOT NULL OR expires_at < $1::text)
                      AND boot_id <> $2::text
                )
            )
        )
    )
"""

# Any text names one bigint lock key; the prefix keeps these apart from other advisory locks.
_LOCK_WORKSPACE = "SELECT pg_advisory_xact_lock(hashtextextended('imagine-bot:quota:' || $1, 0))"


class PostgresLedger(_LedgerBase):
    """The ``Ledger`` on PostgreSQL through an asyncpg pool shared with the other stores.

    Create it with ``await PostgresLedger.open(url, defaults=...)``; ``clock`` returns the
    current aware UTC time (tests inject one).
    """

    def __init__(
        self,
        pool: Pool,
        *,
        defaults: Limits,
        clock: Clock,
        location: str,
        job_timeout: timedelta = DEFAULT_JOB_TIMEOUT,
        lease: timedelta = LEASE,
    ) -> None:
        super().__init__(defaults=defaults, clock=clock, job_timeout=job_timeout, lease=lease)
        self.pool = pool
        self._location = location

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        defaults: Limits | None = None,
        clock: Clock | None = None,
        job_timeout: timedelta = DEFAULT_JOB_TIMEOUT,
        lease: timedelta = LEASE,
        max_connections: int = 10,
    ) -> PostgresLedger:
        """Connect, migrate as needed and record this process's boot."""
        defaults = defaults or Limits()
        _check_limits(defaults)
        location = redact_url(url)
        pool = await open_pool(url, max_size=max_connections)
        try:
            found = await migrate(pool)
            _log_open(location, found)
            ledger = cls(
                pool,
                defaults=defaults,
                clock=clock or _system_clock,
                location=location,
                job_timeout=job_timeout,
                lease=lease,
            )
            await ledger._start_boot()
        except BaseException:
            await pool.close()
            raise
        return ledger

    async def _record_exit(self, at: str) -> None:
        await self.pool.execute(
            "UPDATE boots SET stopped_at = $1 WHERE boot_id = $2", at, self.boot_id
        )

    async def _disconnect(self) -> None:
        await self.pool.close()

    # --- the pool, shared with the moderation store and the job queue -----------------------

    async def execute(self, sql: str, *args: Any) -> list[Any]:
        """One statement on a connection of the pool; its rows (``asyncpg.Record``)."""
        return await self.pool.fetch(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection of the pool inside one transaction (committed when the block ends,
        rolled back when it raises)."""
        async with self.pool.acquire() as connection, connection.transaction():
            yield connection

    # --- leases (bot.store.lease) -----------------------------------------------------------

    async def _insert_boot(self, values: tuple[Any, ...]) -> None:
        await self.pool.execute(
            """
            INSERT INTO boots (boot_id, host, pid, started, started_at, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            """,
            *values,
        )

    async def _extend_lease(self, expires: str) -> bool:
        renewed = await self.pool.fetchval(
            """
            UPDATE boots SET expires_at = $1
            WHERE boot_id = $2 AND stopped_at IS NULL
            RETURNING boot_id
            """,
            expires,
            self.boot_id,
        )
        return renewed is not None

    async def _neighbours(self) -> list[Any]:
        return await self.pool.fetch(
            """
            SELECT boot_id, pid, started FROM boots
            WHERE host = $1 AND stopped_at IS NULL AND boot_id <> $2
            """,
            self.process.host,
            self.boot_id,
        )

    async def _mark_stopped(self, boot_ids: list[str], at: str) -> None:
        await self.pool.execute(
            "UPDATE boots SET stopped_at = $1 WHERE boot_id = ANY($2) AND stopped_at IS NULL",
            at,
            boot_ids,
        )

    async def refund_orphans(self) -> int:
        """Refund the holds no process will settle (owner stopped, lease lapsed, or past their
        own deadline), with a pending notice where the adapter left a way to reach the
        member. Returns how many."""
        now = stamp(self.now())
        await self._bury_dead_neighbours(self.now())
        # A lapsed lease is final: its process, should it wake up, starts a new boot.
        await self.pool.execute(
            """
            UPDATE boots SET stopped_at = $1
            WHERE stopped_at IS NULL AND expires_at < $1 AND boot_id <> $2
            """,
            now,
            self.boot_id,
        )
        refunded: list[str] = []
        while True:
            job_id = await self.pool.fetchval(
                f"""
                UPDATE jobs SET state = 'refunded', finished_at = $1,
                    refund_reason = CASE WHEN deadline < $1 THEN 'expired' ELSE $3 END,
                    notice = CASE WHEN reach IS NOT NULL THEN 'pending' END
                WHERE state = 'held' AND job_id = (
                    SELECT job_id FROM jobs WHERE {_ORPHAN}
                    LIMIT 1 FOR UPDATE SKIP LOCKED
                )
                RETURNING job_id
                """,
                now,
                self.boot_id,
                INTERRUPTED,
            )
            if job_id is None:
                break
            refunded.append(str(job_id))
        _log_orphans(refunded)
        return len(refunded)

    async def refund_orphan(self, job_id: str) -> bool:
        """Refund ``job_id`` if it is held by a process that no longer runs (or overdue)."""
        now = self.now()
        await self._bury_dead_neighbours(now)
        refunded = await self.pool.fetchval(
            f"""
            UPDATE jobs SET state = 'refunded', finished_at = $1, refund_reason = $3
            WHERE job_id = $4 AND {_ORPHAN}
            RETURNING job_id
            """,
            stamp(now),
            self.boot_id,
            INTERRUPTED,
            job_id,
        )
        return refunded is not None

    async def claim_notices(self, platform: str, *, limit: int = 50) -> list[Interrupted]:
        """Interrupted jobs of ``platform`` whose member has not been told yet, claimed by
        this process (rows another process is claiming are skipped, not waited for)."""
        rows = await self.pool.fetch(
            f"""
            UPDATE jobs SET notice = $1
            WHERE job_id IN (
                SELECT job_id FROM jobs
                WHERE notice = 'pending' AND platform = $2
                LIMIT $3 FOR UPDATE SKIP LOCKED
            )
            RETURNING {JOB_COLUMNS}, reach
            """,
            f"claimed:{self.boot_id}",
            platform,
            limit,
        )
        return [_interrupted(row) for row in rows]

    async def notice_sent(self, job_id: str) -> None:
        await self.pool.execute("UPDATE jobs SET notice = 'sent' WHERE job_id = $1", job_id)

    async def first_click(self, key: str, *, window: timedelta) -> bool:
        """Whether this press of a button is the first within ``window``, whichever process
        got it."""
        now = self.now()
        first = await self.pool.fetchval(
            """
            INSERT INTO clicks AS c (click_key, at) VALUES ($1, $2)
            ON CONFLICT (click_key) DO UPDATE SET at = excluded.at WHERE c.at < $3
            RETURNING click_key
            """,
            key,
            stamp(now),
            stamp(now - window),
        )
        return first is not None

    @property
    def location(self) -> str:
        """The URL without its password."""
        return self._location

    # --- holds and settling ---------------------------------------------------------------

    def _state_args(self, requester: Requester, now: datetime) -> list[Any]:
        return [
            requester.platform,
            requester.workspace_id,
            requester.user_id,
            _unique(requester.role_ids),
            *_periods(now),
            self.defaults.images_per_day,
            self.defaults.images_per_month,
            self.defaults.usd_micros_per_month,
        ]

    async def _state(self, requester: Requester, now: datetime) -> _State:
        row = await self.pool.fetchrow(_STATE, *self._state_args(requester, now))
        if row is None:  # pragma: no cover - a SELECT without FROM always gives one row
            raise AssertionError("the state query returned no row")
        return _State.of(tuple(row))

    async def _hold(
        self,
        requester: Requester,
        request: GenerationRequest,
        cost_micros: int,
        event_id: str | None,
        reach: Mapping[str, str] | None,
    ) -> Hold:
        now = self.now()
        job = self._new_job(requester, request, cost_micros, event_id, reach, now)
        async with self.transaction() as connection:
            workspace = f"{requester.platform}:{requester.workspace_id}"
            await connection.execute(_LOCK_WORKSPACE, workspace)
            decided = await connection.fetchrow(
                _HOLD, *self._state_args(requester, now), *job.values()
            )
            if decided is None:  # pragma: no cover - the statement always gives one row
                raise AssertionError("the hold statement returned no row")
            if decided["job_id"] is not None:
                return _held(job.job_id, requester, request, cost_micros)
            known = None
            if event_id is not None:
                known = await connection.fetchval(
                    "SELECT job_id FROM jobs WHERE event_id = $1", event_id
                )
        if known is not None:
            return _duplicate(event_id, known)
        raise _refusal(_State.of(tuple(decided)), request, cost_micros, now)

    async def charge(self, job_id: str, *, images: int, cost_micros: int) -> None:
        _check_charge(images, cost_micros)
        charged = await self.pool.fetchval(
            """
            UPDATE jobs SET state = 'charged', charged_images = $2,
                charged_micros = $3, finished_at = $4
            WHERE job_id = $1 AND state = 'held'
              AND $2 <= held_images AND $3 <= held_micros
            RETURNING job_id
            """,
            job_id,
            images,
            cost_micros,
            stamp(self.now()),
        )
        if charged is not None:
            return
        found = await self.pool.fetchrow(
            "SELECT state, held_images, held_micros FROM jobs WHERE job_id = $1", job_id
        )
        _not_charged(job_id, images, cost_micros, None if found is None else tuple(found))

    async def refund(self, job_id: str, *, reason: str) -> None:
        refunded = await self.pool.fetchval(
            """
            UPDATE jobs SET state = 'refunded', refund_reason = $2, finished_at = $3
            WHERE job_id = $1 AND state = 'held'
            RETURNING job_id
            """,
            job_id,
            reason,
            stamp(self.now()),
        )
        if refunded is not None:
            _refunded(job_id, reason)
            return
        state = await self.pool.fetchval("SELECT state FROM jobs WHERE job_id = $1", job_id)
        _not_refunded(job_id, reason, state)

    async def _job_row(self, job_id: str) -> Sequence[Any] | None:
        row = await self.pool.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1", job_id)
        return None if row is None else tuple(row)

    # --- reading limits and usage ---------------------------------------------------------

    async def _limits_row(self, scope: Scope) -> Sequence[Any] | None:
        row = await self.pool.fetchrow(
            """
            SELECT images_per_day, images_per_month, usd_micros_per_month FROM limits
            WHERE platform = $1 AND workspace_id = $2 AND kind = $3 AND subject_id = $4
            """,
            *_scope_args(scope),
        )
        return None if row is None else tuple(row)

    async def spend_cap(self, *, platform: str, workspace_id: str) -> int | None:
        cap = await self.pool.fetchval(
            "SELECT usd_micros_per_month FROM spend_caps WHERE platform = $1 AND workspace_id = $2",
            platform,
            workspace_id,
        )
        return None if cap is None else int(cap)

    async def _usage_rows(
        self, since: str, until: str | None, platform: str | None, workspace_id: str | None
    ) -> list[Any]:
        return await self.pool.fetch(
            """
            SELECT day, platform, workspace_id, user_id, model,
                   sum(charged_images)::bigint, sum(charged_micros)::bigint
            FROM jobs
            WHERE state = 'charged' AND created_at >= $1::text
              AND ($2::text IS NULL OR created_at < $2::text)
              AND ($3::text IS NULL OR platform = $3::text)
              AND ($4::text IS NULL OR workspace_id = $4::text)
            GROUP BY day, platform, workspace_id, user_id, model
            ORDER BY day, platform, workspace_id, user_id, model
            """,
            since,
            until,
            platform,
            workspace_id,
        )

    # --- admin changes (each writes an audit row, by trigger, in the same statement) ------

    async def _write_limits(self, scope: Scope, limits: Limits, at: str, actor: str) -> None:
        await self.pool.execute(
            """
            INSERT INTO limits (platform, workspace_id, kind, subject_id, images_per_day,
                                images_per_month, usd_micros_per_month, updated_at, updated_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (platform, workspace_id, kind, subject_id) DO UPDATE SET
                images_per_day = excluded.images_per_day,
                images_per_month = excluded.images_per_month,
                usd_micros_per_month = excluded.usd_micros_per_month,
                updated_at = excluded.updated_at,
                updated_by = excluded.updated_by
            """,
            *_scope_args(scope),
            limits.images_per_day,
            limits.images_per_month,
            limits.usd_micros_per_month,
            at,
            actor,
        )

    async def _change_limits(
        self, scope: Scope, changes: Mapping[LimitName, int | None], at: str, actor: str
    ) -> Sequence[Any]:
        day, month, usd = (
            LimitName.IMAGES_PER_DAY,
            LimitName.IMAGES_PER_MONTH,
            LimitName.USD_MICROS_PER_MONTH,
        )
        row = await self.pool.fetchrow(
            """
            INSERT INTO limits AS l (platform, workspace_id, kind, subject_id, images_per_day,
                                     images_per_month, usd_micros_per_month, updated_at,
                                     updated_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (platform, workspace_id, kind, subject_id) DO UPDATE SET
                images_per_day = CASE WHEN $10::boolean
                    THEN excluded.images_per_day ELSE l.images_per_day END,
                images_per_month = CASE WHEN $11::boolean
                    THEN excluded.images_per_month ELSE l.images_per_month END,
                usd_micros_per_month = CASE WHEN $12::boolean
                    THEN excluded.usd_micros_per_month ELSE l.usd_micros_per_month END,
                updated_at = excluded.updated_at,
                updated_by = excluded.updated_by
            RETURNING images_per_day, images_per_month, usd_micros_per_month
            """,
            *_scope_args(scope),
            changes.get(day),
            changes.get(month),
            changes.get(usd),
            at,
            actor,
            day in changes,
            month in changes,
            usd in changes,
        )
        if row is None:  # pragma: no cover - an upsert always returns its row
            raise AssertionError("change_limits wrote no row")
        return tuple(row)

    async def _clear_limits(self, scope: Scope, at: str, actor: str) -> None:
        await self.pool.execute(
            """
            UPDATE limits SET images_per_day = NULL, images_per_month = NULL,
                usd_micros_per_month = NULL, updated_at = $5, updated_by = $6
            WHERE platform = $1 AND workspace_id = $2 AND kind = $3 AND subject_id = $4
              AND NOT (images_per_day IS NULL AND images_per_month IS NULL
                       AND usd_micros_per_month IS NULL)
            """,
            *_scope_args(scope),
            at,
            actor,
        )

    async def _write_spend_cap(
        self, platform: str, workspace_id: str, usd_micros: int | None, at: str, actor: str
    ) -> None:
        if usd_micros is None:
            await self.pool.execute(
                """
                UPDATE spend_caps SET usd_micros_per_month = NULL, updated_at = $3,
                    updated_by = $4
                WHERE platform = $1 AND workspace_id = $2
                  AND usd_micros_per_month IS NOT NULL
                """,
                platform,
                workspace_id,
                at,
                actor,
            )
        else:
            await self.pool.execute(
                """
                INSERT INTO spend_caps (platform, workspace_id, usd_micros_per_month,
                                        updated_at, updated_by)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (platform, workspace_id) DO UPDATE SET
                    usd_micros_per_month = excluded.usd_micros_per_month,
                    updated_at = excluded.updated_at,
                    updated_by = excluded.updated_by
                """,
                platform,
                workspace_id,
                usd_micros,
                at,
                actor,
            )

    async def _audit_rows(
        self, platform: str | None, workspace_id: str | None, limit: int
    ) -> list[Any]:
        return await self.pool.fetch(
            f"""
            SELECT {_AUDIT_COLUMNS}
            FROM audit
            WHERE ($1::text IS NULL OR platform = $1::text)
              AND ($2::text IS NULL OR workspace_id = $2::text)
            ORDER BY id DESC LIMIT $3
            """,
            platform,
            workspace_id,
            limit,
        )

    # --- operations -----------------------------------------------------------------------

    async def ping(self) -> None:
        """A trivial query on a connection of the pool: raises when the server does not
        answer."""
        await self.pool.fetchval("SELECT 1")

    async def _stats_rows(self) -> tuple[list[Any], list[Any]]:
        states = await self.pool.fetch("SELECT state, count(*) FROM jobs GROUP BY state")
        charged = await self.pool.fetch(
            """
            SELECT model, sum(charged_images)::bigint, sum(charged_micros)::bigint FROM jobs
            WHERE state = 'charged' GROUP BY model ORDER BY model
            """
        )
        return states, charged

    async def backup(self, target: str | os.PathLike[str]) -> None:
        """A consistent logical copy (one ``REPEATABLE READ`` read-only snapshot) in a new
        SQLite file at ``target``, by ``bot.store.copy``: ``imagine-bot db copy --from
        sqlite:///FILE --to postgresql://...`` restores it. ``pg_dump`` works too."""
        await backup_postgres(self.pool, target, location=self._location)


def _scope_args(scope: Scope) -> tuple[str, str, str, str]:
    return (scope.platform, scope.workspace_id, str(scope.kind), scope.subject_id)

"""The cluster-wide job queue's statements (tables: ``bot.store.postgres.queue_schema``).

Every step that changes what may start is one transaction that locks the single
``queue_state`` row first: admissions, claims, finished calls, requeues and releases are then
serialised across every process, which is what makes the caps exact (the per-user cap is a
conditional increment of a counter row in the same transaction; the global cap is the locked
``running`` count). A claim takes the queued job of the server, then the user, served least
recently (rate-limited retries and jobs taken over first), with ``FOR UPDATE SKIP LOCKED`` so
that a row another transaction is moving is passed over rather than waited for. Whoever claims
names the job's runner: its acceptor while that process lives, else the claiming process
(``adoptable``: only jobs of platforms it can deliver). The runner hears of it through
``NOTIFY imagine_queue`` (``start <runner> <job> <epoch>``), sent at commit; ``cancel
<acceptor> <job>`` tells a waiting acceptor its job was cancelled elsewhere, and ``handover
<boot> <count>`` tells every process that a stopping one left jobs to adopt.

Times: boots' stamps are the ledger's TEXT stamps (``bot.store.row.stamp``); the rate-limit hold
and start times are Unix seconds, the same on every machine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.models import QueueFigures, Requester
from bot.store.postgres.queue_schema import CLAIM_NEXT_TEMPLATE
from bot.store.row import parse_stamp

__all__ = ["CHANNEL", "CLAIM_NEXT", "Admission", "Adoption", "Claim", "PostgresQueue"]

log = logging.getLogger(__name__)

CHANNEL = "imagine_queue"

_SERVER_KEY = "q.platform || ':' || q.workspace_id"
_USER_KEY = "q.platform || ':' || q.workspace_id || ':' || q.user_id"

# The dispatch order (the claim's, in ``queue_claim``, and the queue positions'): retries and
# take-overs first, then the server served least recently, its user served least recently,
# the oldest job.
_ORDER = "q.front DESC, coalesce(s.turn, 0), coalesce(u.turn, 0), q.seq"
_TURN_JOINS = f"""
    LEFT JOIN queue_turns s ON s.key = {_SERVER_KEY}
    LEFT JOIN queue_turns u ON u.key = {_USER_KEY}
"""

# The statement ``queue_claim`` runs for each job it starts ($1: now's stamp, $2: the platforms
# this process may adopt), for ``bench/claim.py`` to EXPLAIN.
CLAIM_NEXT = CLAIM_NEXT_TEMPLATE.format(now="$1::text", platforms="$2::text[]")


class Admission:
    """What ``PostgresQueue.admit`` found: admitted, or the cap that refused."""

    ADMITTED = "admitted"
    USER_CAP = "user_cap"
    SERVER_CAP = "server_cap"
    QUEUE_FULL = "queue_full"


def _claims(rows: Sequence[Any]) -> tuple[list[Claim], float]:
    """The jobs ``queue_claim`` (or ``queue_finish``) started, and the rate-limit hold's end
    (0 when none) from the row it returns when nothing may start."""
    claims = [
        Claim(
            job_id=str(r["job_id"]),
            runner=str(r["runner"]),
            adopted=bool(r["adopted"]),
            epoch=int(r["epoch"]),
        )
        for r in rows
        if r["job_id"] is not None
    ]
    hold = max((float(r["hold_until"] or 0) for r in rows if r["job_id"] is None), default=0.0)
    return claims, hold


@dataclass(frozen=True, slots=True)
class Claim:
    """A job a claim started: ``runner`` runs it (``adopted``: not its acceptor)."""

    job_id: str
    runner: str
    adopted: bool
    epoch: int


@dataclass(frozen=True, slots=True)
class Adoption:
    """What a process needs to run a job it did not accept (the rest is in the ledger)."""

    job_id: str
    reach: dict[str, str]
    deadline: float | None  # Unix seconds; None when the job has none


# The counter rows of a job's user and server (``queue_counters.key``, as ``queue_admit``
# writes them).
_USER_COUNTER = "'user:' || platform || ':' || workspace_id || ':' || user_id"
_SERVER_COUNTER = "'server:' || platform || ':' || workspace_id"


class PostgresQueue:
    """The statements; ``pool`` is an asyncpg pool, ``boot`` this process's boot id (a
    callable: it changes when the lease was lost and a new boot started)."""

    def __init__(self, pool: Any, boot: Any) -> None:
        self._pool = pool
        self._boot = boot

    @property
    def boot(self) -> str:
        value: str = self._boot()
        return value

    async def configure(self, max_concurrent: int) -> None:
        """Make ``max_concurrent`` the cluster's cap (every process should be given the same
        ``MAX_CONCURRENT_JOBS``; the last to start wins)."""
        await self._pool.execute(
            """
            UPDATE queue_state SET
                concurrency = CASE WHEN max_concurrent <> $1 THEN $1 ELSE concurrency END,
                max_concurrent = $1
            WHERE id = 1
            """,
            max_concurrent,
        )

    async def admit(
        self,
        job_id: str,
        requester: Requester,
        *,
        max_per_user: int,
        max_queue: int,
        max_per_server: int | None = None,
        now_stamp: str,
        now: float,
        adoptable: Iterable[str] = (),
    ) -> tuple[str, list[Claim]]:
        """Queue ``job_id`` unless its user has ``max_per_user`` jobs in the queue already,
        its server ``max_per_server``, or ``max_queue`` jobs wait (and no slot is free); an
        ``Admission`` value, and the jobs started at once when a slot was free (as ``claim``
        starts them). The caps are conditional increments of counter rows, so two processes
        admitting at once cannot both pass a cap with one place left.

        One statement (``queue_admit``): the start is in it because a burst of admissions
        otherwise holds the claims back, each taking the ``queue_state`` lock, the pump's
        claim waiting behind all of them (400 jobs at once on two processes: a second before
        the 16 slots were busy, ``bench/cluster.py``)."""
        rows = await self._pool.fetch(
            """
            SELECT * FROM queue_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text[])
            """,
            job_id,
            requester.platform,
            requester.workspace_id,
            requester.user_id,
            self.boot,
            max_per_user,
            max_per_server,
            max_queue,
            now_stamp,
            now,
            sorted(set(adoptable)),
        )
        claims, _ = _claims(rows)
        return str(rows[0]["admission"]), claims

    async def claim(
        self, *, now_stamp: str, now: float, adoptable: Iterable[str], limit: int = 64
    ) -> tuple[list[Claim], float]:
        """Start queued jobs while the cluster has free slots and no rate-limit hold; returns
        them and the hold's end (Unix seconds, 0 when none)."""
        # A look without the lock first: every process's pump calls this after each change,
        # and taking the one lock when no slot is free or nothing waits only delays those
        # that free slots. Skipping is safe: whoever frees a slot either claims it in the
        # same transaction (``finish_call``) or kicks its pump after committing (a release
        # or take-over of a running job), which then sees the slot here; the poll is the
        # fallback.
        state = await self._pool.fetchrow(
            "SELECT running, concurrency, queued, hold_until FROM queue_state WHERE id = 1"
        )
        hold_until = float(state["hold_until"])
        if hold_until > now:
            return [], hold_until
        if int(state["running"]) >= int(state["concurrency"]) or int(state["queued"]) == 0:
            return [], 0.0
        # One statement (``queue_claim``): atomic without a transaction of its own.
        rows = await self._pool.fetch(
            "SELECT * FROM queue_claim($1, $2, $3::text[], $4, $5)",
            now_stamp,
            now,
            sorted(set(adoptable)),
            self.boot,
            limit,
        )
        return _claims(rows)

    async def adoption(self, job_id: str) -> Adoption | None:
        """The job's reach and deadline, for a process that did not accept it; ``None`` once
        the job is settled."""
        row = await self._pool.fetchrow(
            "SELECT reach, deadline FROM jobs WHERE job_id = $1 AND state = 'held'", job_id
        )
        if row is None:
            return None
        reach = json.loads(row["reach"]) if row["reach"] else {}
        deadline = parse_stamp(row["deadline"]).timestamp() if row["deadline"] else None
        return Adoption(job_id=job_id, reach=reach, deadline=deadline)

    async def finish_call(
        self,
        job_id: str,
        *,
        epoch: int,
        succeeded: bool,
        rate_limited_for: float | None,
        now: float,
        now_stamp: str,
        adoptable: Iterable[str] = (),
    ) -> tuple[list[Claim], float]:
        """The provider call of ``job_id`` is over: free its slot (the job stays in the queue,
        ``delivering``, until it is released) and start the next jobs in it, as ``claim``
        does (its claims and the hold's end). A success started since the last 429 counts
        towards raising the cap again; a 429 (``rate_limited_for``: the bounded wait) halves
        it once per epoch and holds every start until the wait is over.

        One statement (``queue_finish``), the claim included, because a slot handed on in a
        second one waits for the ``queue_state`` lock twice: with 16 slots busy on two
        processes that was most of the 25 to 40 ms a slot stood idle between jobs
        (``bench/cluster.py``)."""
        rows = await self._pool.fetch(
            "SELECT * FROM queue_finish($1, $2, $3, $4, $5, $6, $7, $8::text[])",
            job_id,
            self.boot,
            epoch,
            succeeded,
            rate_limited_for,
            now,
            now_stamp,
            sorted(set(adoptable)),
        )
        return _claims(rows)

    async def requeue(self, job_id: str) -> bool:
        """A rate-limited job back to the front of the queue (its slot already freed)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM queue_state WHERE id = 1 FOR UPDATE")
            moved = await conn.fetchval(
                """
                UPDATE queue SET state = 'queued', front = TRUE, runner = NULL
                WHERE job_id = $1 AND state = 'delivering' AND runner = $2
                RETURNING job_id
                """,
                job_id,
                self.boot,
            )
            if moved is not None:
                await conn.execute("UPDATE queue_state SET queued = queued + 1 WHERE id = 1")
        return moved is not None

    async def release(self, job_id: str) -> None:
        """The job is settled (or never ran): out of the queue, its slot and place freed;
        left alone when another process runs it now (this one lost its lease meanwhile)."""
        # A delivering row holds no slot and only its live runner moves it, so it leaves
        # without the ``queue_state`` lock that every claim waits for (one per job).
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                DELETE FROM queue WHERE job_id = $1 AND state = 'delivering' AND runner = $2
                RETURNING {_USER_COUNTER} AS user_key, {_SERVER_COUNTER} AS server_key
                """,
                job_id,
                self.boot,
            )
            if row is not None:
                await conn.execute(
                    "UPDATE queue_counters SET jobs = jobs - 1"
                    " WHERE key = ANY($1::text[]) AND jobs > 0",
                    [row["user_key"], row["server_key"]],
                )
                return
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM queue_state WHERE id = 1 FOR UPDATE")
            await self._delete(conn, job_id, None, runner=self.boot)

    async def cancel(self, job_id: str) -> str | None:
        """Take a queued job out of the queue; returns its acceptor (``''`` when it was
        handed over), ``None`` when it is not queued (running, finished or unknown)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM queue_state WHERE id = 1 FOR UPDATE")
            acceptor = await self._delete(conn, job_id, "queued")
            if acceptor:
                await conn.execute(
                    "SELECT pg_notify($1, $2)", CHANNEL, f"cancel {acceptor} {job_id}"
                )
        return acceptor

    async def _delete(
        self, conn: Any, job_id: str, only_state: str | None, *, runner: str | None = None
    ) -> str | None:
        row = await conn.fetchrow(
            f"""
            DELETE FROM queue q WHERE job_id = $1 AND ($2::text IS NULL OR state = $2)
              AND ($3::text IS NULL OR runner IS NULL OR runner = $3)
            RETURNING state, acceptor, {_USER_COUNTER} AS user_key,
                {_SERVER_COUNTER} AS server_key
            """,
            job_id,
            only_state,
            runner,
        )
        if row is None:
            return None
        await conn.execute(
            "UPDATE queue_counters SET jobs = jobs - 1 WHERE key = ANY($1::text[]) AND jobs > 0",
            [row["user_key"], row["server_key"]],
        )
        await conn.execute(
            """
            UPDATE queue_state SET
                running = running - CASE WHEN $1 = 'running' THEN 1 ELSE 0 END,
                queued = queued - CASE WHEN $1 = 'queued' THEN 1 ELSE 0 END
            WHERE id = 1
            """,
            row["state"],
        )
        return str(row["acceptor"])

    async def hand_over(self, *, now_stamp: str) -> list[str]:
        """This process is stopping: its queued jobs become anyone's (acceptor ``''``) when
        another process is alive to take them; returns them (empty when this is the last
        process: then they are refunded as on one process)."""
        me = self.boot
        async with self._pool.acquire() as conn, conn.transaction():
            others = await conn.fetchval(
                """
                SELECT count(*) FROM boots
                WHERE stopped_at IS NULL AND expires_at >= $1 AND boot_id <> $2
                """,
                now_stamp,
                me,
            )
            if not others:
                return []
            rows = await conn.fetch(
                """
                UPDATE queue SET acceptor = ''
                WHERE acceptor = $1 AND state = 'queued' RETURNING job_id
                """,
                me,
            )
            if rows:
                # The others claim them now rather than at their next poll.
                await conn.execute(
                    "SELECT pg_notify($1, $2)", CHANNEL, f"handover {me} {len(rows)}"
                )
        return [str(r["job_id"]) for r in rows]

    async def take_over(self, *, now_stamp: str) -> int:
        """Rows whose runner stopped or lost its lease go back to the front of the queue (a
        job no longer held is dropped); returns how many were requeued."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM queue_state WHERE id = 1 FOR UPDATE")
            rows = await conn.fetch(
                """
                SELECT q.job_id, q.state, j.state AS job_state FROM queue q
                LEFT JOIN boots b ON b.boot_id = q.runner
                LEFT JOIN jobs j ON j.job_id = q.job_id
                WHERE q.state <> 'queued'
                  AND NOT (b.boot_id IS NOT NULL AND b.stopped_at IS NULL
                           AND b.expires_at >= $1)
                FOR UPDATE OF q SKIP LOCKED
                """,
                now_stamp,
            )
            requeued = 0
            for row in rows:
                if row["job_state"] != "held":
                    await self._delete(conn, row["job_id"], None)
                    continue
                await conn.execute(
                    """
                    UPDATE queue SET state = 'queued', front = TRUE, runner = NULL,
                        acceptor = ''
                    WHERE job_id = $1
                    """,
                    row["job_id"],
                )
                await conn.execute(
                    """
                    UPDATE queue_state SET queued = queued + 1,
                        running = running - CASE WHEN $1 = 'running' THEN 1 ELSE 0 END
                    WHERE id = 1
                    """,
                    row["state"],
                )
                requeued += 1
            # Queued rows whose job was settled behind the queue's back (its deadline passed).
            stale = await conn.fetch(
                """
                SELECT q.job_id FROM queue q LEFT JOIN jobs j ON j.job_id = q.job_id
                WHERE q.state = 'queued' AND (j.state IS NULL OR j.state <> 'held')
                FOR UPDATE OF q SKIP LOCKED
                """
            )
            for row in stale:
                await self._delete(conn, row["job_id"], None)
        if requeued:
            log.warning("took over %d job(s) of a process that stopped or hangs", requeued)
        return requeued

    async def states(self, job_ids: Sequence[str]) -> dict[str, tuple[str, str | None, int]]:
        """(state, runner, epoch) of each of ``job_ids`` still in the queue."""
        rows = await self._pool.fetch(
            "SELECT job_id, state, runner, epoch FROM queue WHERE job_id = ANY($1::text[])",
            list(job_ids),
        )
        return {str(r["job_id"]): (str(r["state"]), r["runner"], int(r["epoch"])) for r in rows}

    async def positions(self, job_ids: Sequence[str]) -> dict[str, int]:
        """How many queued jobs start before each of ``job_ids`` (those still queued)."""
        rows = await self._pool.fetch(
            f"""
            SELECT job_id, ahead FROM (
                SELECT q.job_id, row_number() OVER (ORDER BY {_ORDER}) - 1 AS ahead
                FROM queue q {_TURN_JOINS}
                WHERE q.state = 'queued'
            ) AS ordered
            WHERE job_id = ANY($1::text[])
            """,
            list(job_ids),
        )
        return {str(r["job_id"]): int(r["ahead"]) for r in rows}

    async def figures(self) -> QueueFigures:
        row = await self._pool.fetchrow(
            "SELECT queued, running, concurrency, max_concurrent FROM queue_state WHERE id = 1"
        )
        return QueueFigures(
            queued=int(row["queued"]),
            running=int(row["running"]),
            concurrency=int(row["concurrency"]),
            max_concurrent=int(row["max_concurrent"]),
        )

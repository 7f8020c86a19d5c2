"""PostgreSQL tables of the cluster-wide job queue (``bot.store.postgres.queue``), created by
``bot.store.postgres.schema``'s first migration after the ledger's and moderation's tables.

``queue``
    One row per job admitted and not yet settled, whichever process accepted it:
    ``queued`` (waiting for a provider slot) -> ``running`` (holds one of the cluster's slots)
    -> ``delivering`` (the provider answered; no slot) -> deleted once the job is charged or
    refunded. ``acceptor`` is the boot that took the member's command (it runs the job while
    it lives; ``''`` once it handed the job over), ``runner`` the boot that runs it. A row
    whose runner died goes back to ``queued`` (``front``: before the others) for another
    process to take over.
``queue_state``
    The one row every claim locks: provider calls in flight cluster-wide (``running``), the
    cap (``concurrency``, lowered by a 429 and raised back towards ``max_concurrent``), the
    rate-limit hold (``hold_until``, Unix seconds), its ``epoch`` and the running count of
    ``turns`` that orders the round-robin; ``queued`` counts waiting rows for the queue bound.
``queue_counters``
    Jobs in the queue per user (``key``), kept in step with ``queue`` in the same transaction:
    the per-user cap is a conditional increment of this row, never a ``COUNT(*)`` (which two
    processes could both pass).
``queue_turns``
    The turn at which each server and each user was last served: the claim takes the queued
    job of the server, then the user, served least recently.
"""

from __future__ import annotations

__all__ = ["QUEUE"]

QUEUE: tuple[str, ...] = (
    """
    CREATE TABLE queue (
        job_id       TEXT PRIMARY KEY,
        seq          BIGSERIAL NOT NULL,
        platform     TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        user_id      TEXT NOT NULL,
        state        TEXT NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'delivering')),
        front        BOOLEAN NOT NULL DEFAULT FALSE,
        acceptor     TEXT NOT NULL,
        runner       TEXT,
        epoch        BIGINT NOT NULL DEFAULT 0,
        started_at   DOUBLE PRECISION
    )
    """,
    "CREATE INDEX queue_waiting ON queue (seq) WHERE state = 'queued'",
    "CREATE INDEX queue_runner ON queue (runner) WHERE state <> 'queued'",
    """
    CREATE TABLE queue_state (
        id             INTEGER PRIMARY KEY CHECK (id = 1),
        running        BIGINT NOT NULL DEFAULT 0,
        queued         BIGINT NOT NULL DEFAULT 0,
        concurrency    BIGINT NOT NULL DEFAULT 4,
        max_concurrent BIGINT NOT NULL DEFAULT 4,
        hold_until     DOUBLE PRECISION NOT NULL DEFAULT 0,
        epoch          BIGINT NOT NULL DEFAULT 0,
        successes      BIGINT NOT NULL DEFAULT 0,
        turns          BIGINT NOT NULL DEFAULT 0
    )
    """,
    "INSERT INTO queue_state (id) VALUES (1)",
    """
    CREATE TABLE queue_counters (
        key  TEXT PRIMARY KEY,
        jobs BIGINT NOT NULL DEFAULT 0 CHECK (jobs >= 0)
    )
    """,
    """
    CREATE TABLE queue_turns (
        key  TEXT PRIMARY KEY,
        turn BIGINT NOT NULL
    )
    """,
)

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

Functions: ``queue_claim`` starts queued jobs while slots are free, ``queue_admit`` queues a
job under the caps (and starts it when a slot is free), and ``queue_finish`` frees a finished
call's slot (with the rate-limit bookkeeping) and then claims. Each is one
statement, so each is one round trip holding the ``queue_state`` lock for as long as the
server takes to run it, instead of one per step: that lock is what every start and finish of
every process waits for.
"""

from __future__ import annotations

__all__ = ["CLAIM_NEXT_TEMPLATE", "QUEUE"]

# The next job a claim starts, in the dispatch order: rate-limited retries and take-overs
# first, then the server served least recently, its user served least recently, the oldest
# job. ``{now}`` is now's stamp, ``{platforms}`` the platforms the claiming process may adopt
# (a job whose acceptor is gone); ``bot.store.postgres.queue.CLAIM_NEXT`` is the same
# statement with parameters, for ``bench/claim.py`` to EXPLAIN.
CLAIM_NEXT_TEMPLATE = """
    SELECT q.job_id, q.acceptor,
           (b.boot_id IS NOT NULL AND b.stopped_at IS NULL AND b.expires_at >= {now}) AS alive,
           q.platform || ':' || q.workspace_id AS server_key,
           q.platform || ':' || q.workspace_id || ':' || q.user_id AS user_key
    FROM queue q
    LEFT JOIN boots b ON b.boot_id = q.acceptor
    LEFT JOIN queue_turns s ON s.key = q.platform || ':' || q.workspace_id
    LEFT JOIN queue_turns u ON u.key = q.platform || ':' || q.workspace_id || ':' || q.user_id
    WHERE q.state = 'queued'
      AND ((b.boot_id IS NOT NULL AND b.stopped_at IS NULL AND b.expires_at >= {now})
           OR q.platform = ANY({platforms}))
    ORDER BY q.front DESC, coalesce(s.turn, 0), coalesce(u.turn, 0), q.seq
    LIMIT 1
    FOR UPDATE OF q SKIP LOCKED
"""

_CLAIM = (
    """
    CREATE FUNCTION queue_claim(
        p_now_stamp TEXT, p_now DOUBLE PRECISION, p_platforms TEXT[], p_me TEXT, p_limit INTEGER
    ) RETURNS TABLE (
        job_id TEXT, runner TEXT, adopted BOOLEAN, epoch BIGINT, hold_until DOUBLE PRECISION
    ) LANGUAGE plpgsql AS $$
    DECLARE
        st queue_state%ROWTYPE;
        r RECORD;
        v_runner TEXT;
        n INTEGER := 0;
    BEGIN
        SELECT * INTO st FROM queue_state WHERE id = 1 FOR UPDATE;
        IF st.hold_until > p_now THEN
            job_id := NULL; runner := NULL; adopted := NULL; epoch := st.epoch;
            hold_until := st.hold_until;
            RETURN NEXT;
            RETURN;
        END IF;
        WHILE st.running + n < st.concurrency AND n < p_limit LOOP
    """
    + CLAIM_NEXT_TEMPLATE.format(now="p_now_stamp", platforms="p_platforms")
    .replace("SELECT q.job_id, q.acceptor,", "SELECT q.job_id AS jid, q.acceptor,")
    .replace("\n    FROM queue q\n", "\n    INTO r\n    FROM queue q\n")
    + """;
            EXIT WHEN NOT FOUND;
            v_runner := CASE WHEN r.alive THEN r.acceptor ELSE p_me END;
            st.turns := st.turns + 1;
            n := n + 1;
            UPDATE queue SET state = 'running', runner = v_runner, epoch = st.epoch,
                started_at = p_now, front = FALSE
            WHERE queue.job_id = r.jid;
            INSERT INTO queue_turns AS t (key, turn)
            VALUES (r.server_key, st.turns), (r.user_key, st.turns)
            ON CONFLICT (key) DO UPDATE SET turn = excluded.turn;
            IF v_runner <> r.acceptor THEN
                -- The job is the claimer's now: the orphan sweep must not refund it.
                UPDATE jobs SET owner = p_me WHERE jobs.job_id = r.jid;
            END IF;
            PERFORM pg_notify('imagine_queue', 'start ' || v_runner || ' ' || r.jid || ' '
                              || st.epoch);
            job_id := r.jid; runner := v_runner; adopted := v_runner <> r.acceptor;
            epoch := st.epoch; hold_until := 0;
            RETURN NEXT;
        END LOOP;
        IF n > 0 THEN
            UPDATE queue_state SET running = running + n, queued = queued - n,
                turns = st.turns
            WHERE id = 1;
        END IF;
    END
    $$
    """
)

_ADMIT = """
    CREATE FUNCTION queue_admit(
        p_job TEXT, p_platform TEXT, p_workspace TEXT, p_user TEXT, p_me TEXT,
        p_max_per_user BIGINT, p_max_per_server BIGINT, p_max_queue BIGINT,
        p_now_stamp TEXT, p_now DOUBLE PRECISION, p_platforms TEXT[]
    ) RETURNS TABLE (
        admission TEXT, job_id TEXT, runner TEXT, adopted BOOLEAN, epoch BIGINT,
        hold_until DOUBLE PRECISION
    ) LANGUAGE plpgsql AS $$
    DECLARE
        st queue_state%ROWTYPE;
        v_user TEXT := 'user:' || p_platform || ':' || p_workspace || ':' || p_user;
        v_server TEXT := 'server:' || p_platform || ':' || p_workspace;
        v_free BOOLEAN;
        c RECORD;
    BEGIN
        SELECT * INTO st FROM queue_state WHERE id = 1 FOR UPDATE;
        v_free := st.running < st.concurrency AND st.queued = 0;
        IF st.queued >= p_max_queue AND NOT v_free THEN
            admission := 'queue_full';
            RETURN NEXT;
            RETURN;
        END IF;
        INSERT INTO queue_counters (key, jobs) VALUES (v_user, 0), (v_server, 0)
        ON CONFLICT DO NOTHING;
        -- The caps are conditional increments of counter rows, never a count of the queue.
        UPDATE queue_counters SET jobs = jobs + 1 WHERE key = v_user AND jobs < p_max_per_user;
        IF NOT FOUND THEN
            admission := 'user_cap';
            RETURN NEXT;
            RETURN;
        END IF;
        UPDATE queue_counters SET jobs = jobs + 1
        WHERE key = v_server AND (p_max_per_server IS NULL OR jobs < p_max_per_server);
        IF NOT FOUND THEN
            UPDATE queue_counters SET jobs = jobs - 1 WHERE key = v_user;
            admission := 'server_cap';
            RETURN NEXT;
            RETURN;
        END IF;
        INSERT INTO queue (job_id, platform, workspace_id, user_id, acceptor)
        VALUES (p_job, p_platform, p_workspace, p_user, p_me);
        UPDATE queue_state SET queued = queued + 1 WHERE id = 1;
        admission := 'admitted';
        IF v_free THEN
            -- Started at once in the same statement: a burst of admissions would otherwise
            -- hold the claims back behind it.
            FOR c IN SELECT * FROM queue_claim(p_now_stamp, p_now, p_platforms, p_me, 64) LOOP
                job_id := c.job_id; runner := c.runner; adopted := c.adopted;
                epoch := c.epoch; hold_until := c.hold_until;
                RETURN NEXT;
            END LOOP;
            IF FOUND THEN
                RETURN;
            END IF;
        END IF;
        job_id := NULL;
        RETURN NEXT;
    END
    $$
"""

_FINISH = """
    CREATE FUNCTION queue_finish(
        p_job TEXT, p_me TEXT, p_epoch BIGINT, p_succeeded BOOLEAN,
        p_rate_limited_for DOUBLE PRECISION, p_now DOUBLE PRECISION, p_now_stamp TEXT,
        p_platforms TEXT[]
    ) RETURNS TABLE (
        job_id TEXT, runner TEXT, adopted BOOLEAN, epoch BIGINT, hold_until DOUBLE PRECISION,
        concurrency BIGINT
    ) LANGUAGE plpgsql AS $$
    DECLARE
        st queue_state%ROWTYPE;
        moved INTEGER;
        c RECORD;
    BEGIN
        SELECT * INTO st FROM queue_state WHERE id = 1 FOR UPDATE;
        UPDATE queue SET state = 'delivering'
        WHERE queue.job_id = p_job AND state = 'running' AND queue.runner = p_me;
        GET DIAGNOSTICS moved = ROW_COUNT;
        IF p_succeeded AND st.concurrency < st.max_concurrent AND p_epoch = st.epoch THEN
            -- Only calls started since the last 429 show that the provider has recovered.
            st.successes := st.successes + 1;
            IF st.successes >= st.concurrency THEN
                st.concurrency := st.concurrency + 1;
                st.successes := 0;
            END IF;
        ELSIF p_rate_limited_for IS NOT NULL THEN
            IF p_epoch = st.epoch THEN
                -- Calls already in flight when the cap was lowered do not lower it again.
                st.concurrency := greatest(1, st.concurrency / 2);
                st.epoch := st.epoch + 1;
                st.successes := 0;
            END IF;
            st.hold_until := greatest(st.hold_until, p_now + p_rate_limited_for);
        END IF;
        UPDATE queue_state SET running = running - moved, concurrency = st.concurrency,
            successes = st.successes, epoch = st.epoch, hold_until = st.hold_until
        WHERE id = 1;
        FOR c IN SELECT * FROM queue_claim(p_now_stamp, p_now, p_platforms, p_me, 64) LOOP
            job_id := c.job_id; runner := c.runner; adopted := c.adopted; epoch := c.epoch;
            hold_until := c.hold_until; concurrency := st.concurrency;
            RETURN NEXT;
        END LOOP;
        IF NOT FOUND THEN
            job_id := NULL; runner := NULL; adopted := NULL; epoch := st.epoch;
            hold_until := 0; concurrency := st.concurrency;
            RETURN NEXT;
        END IF;
    END
    $$
"""

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
    _CLAIM,
    _ADMIT,
    _FINISH,
)

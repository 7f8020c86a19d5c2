"""The ledger's SQLite schema and its forward migrations (``PRAGMA user_version``).

Each migration is a tuple of statements, applied in one ``BEGIN IMMEDIATE`` transaction
together with the new ``user_version``, so a crash leaves the database at the old version or
the new one, never in between. Add a migration by appending to ``MIGRATIONS``; never edit one
that has shipped.

Tables (version 1):

``jobs``
    One row per accepted job: who asked, where, what (so it can be repeated after a restart),
    its state (``held`` -> ``charged`` | ``refunded``), the amounts held and charged in
    micro-dollars and images, its UTC ``day``/``month`` window keys and its timings.
    ``event_id`` is unique: a redelivered platform event cannot create a second job.
``usage_counters``, ``workspace_counters``
    Held + charged images and micro-dollars per user per day and month, and per workspace per
    month. Triggers on ``jobs`` keep them in step inside the statement that changes a job, so a
    hold reads a few primary-key rows instead of summing the month's jobs.
``limits``, ``spend_caps``
    Admin-set limits per workspace default / role / user, and the workspace-wide monthly spend
    cap. ``NULL`` means "not set at this scope".
``audit``
    One row per admin change (who, when, scope, old and new value as JSON), written by triggers
    on ``limits`` and ``spend_caps`` in the same statement as the change.
"""

from __future__ import annotations

import logging

import aiosqlite

from bot.errors import ConfigError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

log = logging.getLogger(__name__)

_V1: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        job_id          TEXT PRIMARY KEY,
        event_id        TEXT UNIQUE,
        platform        TEXT NOT NULL,
        workspace_id    TEXT NOT NULL,
        channel_id      TEXT NOT NULL,
        user_id         TEXT NOT NULL,
        role_ids        TEXT NOT NULL DEFAULT '[]',
        display_name    TEXT NOT NULL DEFAULT '',
        prompt          TEXT NOT NULL,
        model           TEXT NOT NULL,
        size            TEXT NOT NULL,
        n               INTEGER NOT NULL,
        seed            INTEGER,
        negative_prompt TEXT,
        state           TEXT NOT NULL DEFAULT 'held'
                        CHECK (state IN ('held', 'charged', 'refunded')),
        held_images     INTEGER NOT NULL CHECK (held_images >= 0),
        held_micros     INTEGER NOT NULL CHECK (held_micros >= 0),
        charged_images  INTEGER NOT NULL DEFAULT 0
                        CHECK (charged_images BETWEEN 0 AND held_images),
        charged_micros  INTEGER NOT NULL DEFAULT 0
                        CHECK (charged_micros BETWEEN 0 AND held_micros),
        day             TEXT NOT NULL,
        month           TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        finished_at     TEXT,
        refund_reason   TEXT
    )
    """,
    "CREATE INDEX jobs_created ON jobs (created_at)",
    "CREATE INDEX jobs_held ON jobs (created_at) WHERE state = 'held'",
    """
    CREATE TABLE usage_counters (
        platform     TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        user_id      TEXT NOT NULL,
        period       TEXT NOT NULL,
        images       INTEGER NOT NULL DEFAULT 0,
        micros       INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (platform, workspace_id, user_id, period)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE workspace_counters (
        platform     TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        period       TEXT NOT NULL,
        images       INTEGER NOT NULL DEFAULT 0,
        micros       INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (platform, workspace_id, period)
    ) WITHOUT ROWID
    """,
    # A hold adds to the user's day and month and to the workspace's month ...
    """
    CREATE TRIGGER jobs_hold AFTER INSERT ON jobs
    BEGIN
        INSERT INTO usage_counters (platform, workspace_id, user_id, period, images, micros)
        VALUES
            (NEW.platform, NEW.workspace_id, NEW.user_id, 'D' || NEW.day,
             NEW.held_images, NEW.held_micros),
            (NEW.platform, NEW.workspace_id, NEW.user_id, 'M' || NEW.month,
             NEW.held_images, NEW.held_micros)
        ON CONFLICT DO UPDATE SET
            images = images + excluded.images, micros = micros + excluded.micros;
        INSERT INTO workspace_counters (platform, workspace_id, period, images, micros)
        VALUES (NEW.platform, NEW.workspace_id, 'M' || NEW.month,
                NEW.held_images, NEW.held_micros)
        ON CONFLICT DO UPDATE SET
            images = images + excluded.images, micros = micros + excluded.micros;
    END
    """,
    # ... settling it gives back what was held but not charged (all of it on a refund; nothing,
    # and no counter page is rewritten, when everything held was delivered) ...
    """
    CREATE TRIGGER jobs_settle AFTER UPDATE OF state ON jobs
    WHEN OLD.state = 'held' AND NEW.state <> 'held'
         AND (NEW.charged_images < OLD.held_images OR NEW.charged_micros < OLD.held_micros)
    BEGIN
        UPDATE usage_counters SET
            images = images - (OLD.held_images - NEW.charged_images),
            micros = micros - (OLD.held_micros - NEW.charged_micros)
        WHERE platform = OLD.platform AND workspace_id = OLD.workspace_id
          AND user_id = OLD.user_id AND period IN ('D' || OLD.day, 'M' || OLD.month);
        UPDATE workspace_counters SET
            images = images - (OLD.held_images - NEW.charged_images),
            micros = micros - (OLD.held_micros - NEW.charged_micros)
        WHERE platform = OLD.platform AND workspace_id = OLD.workspace_id
          AND period = 'M' || OLD.month;
    END
    """,
    # ... and a settled job never changes state again.
    """
    CREATE TRIGGER jobs_final BEFORE UPDATE OF state ON jobs
    WHEN OLD.state <> 'held'
    BEGIN
        SELECT RAISE(ABORT, 'job is already settled');
    END
    """,
    """
    CREATE TABLE limits (
        platform             TEXT NOT NULL,
        workspace_id         TEXT NOT NULL,
        kind                 TEXT NOT NULL CHECK (kind IN ('workspace', 'role', 'user')),
        subject_id           TEXT NOT NULL,
        images_per_day       INTEGER CHECK (images_per_day >= 0),
        images_per_month     INTEGER CHECK (images_per_month >= 0),
        usd_micros_per_month INTEGER CHECK (usd_micros_per_month >= 0),
        updated_at           TEXT NOT NULL,
        updated_by           TEXT NOT NULL,
        PRIMARY KEY (platform, workspace_id, kind, subject_id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE spend_caps (
        platform             TEXT NOT NULL,
        workspace_id         TEXT NOT NULL,
        usd_micros_per_month INTEGER CHECK (usd_micros_per_month >= 0),
        updated_at           TEXT NOT NULL,
        updated_by           TEXT NOT NULL,
        PRIMARY KEY (platform, workspace_id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE audit (
        id           INTEGER PRIMARY KEY,
        at           TEXT NOT NULL,
        actor        TEXT NOT NULL,
        action       TEXT NOT NULL,
        scope_kind   TEXT NOT NULL,
        platform     TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        subject_id   TEXT NOT NULL,
        old          TEXT,
        new          TEXT
    )
    """,
    "CREATE INDEX audit_workspace ON audit (platform, workspace_id, id)",
    """
    CREATE TRIGGER limits_audit_insert AFTER INSERT ON limits
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.updated_at, NEW.updated_by, 'set_limits', NEW.kind, NEW.platform,
                NEW.workspace_id, NEW.subject_id, NULL,
                json_object('images_per_day', NEW.images_per_day,
                            'images_per_month', NEW.images_per_month,
                            'usd_micros_per_month', NEW.usd_micros_per_month));
    END
    """,
    """
    CREATE TRIGGER limits_audit_update AFTER UPDATE ON limits
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.updated_at, NEW.updated_by,
                CASE WHEN NEW.images_per_day IS NULL AND NEW.images_per_month IS NULL
                          AND NEW.usd_micros_per_month IS NULL
                     THEN 'clear_limits' ELSE 'set_limits' END,
                NEW.kind, NEW.platform, NEW.workspace_id, NEW.subject_id,
                json_object('images_per_day', OLD.images_per_day,
                            'images_per_month', OLD.images_per_month,
                            'usd_micros_per_month', OLD.usd_micros_per_month),
                json_object('images_per_day', NEW.images_per_day,
                            'images_per_month', NEW.images_per_month,
                            'usd_micros_per_month', NEW.usd_micros_per_month));
    END
    """,
    """
    CREATE TRIGGER spend_caps_audit_insert AFTER INSERT ON spend_caps
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.updated_at, NEW.updated_by, 'set_spend_cap', 'workspace', NEW.platform,
                NEW.workspace_id, '', NULL,
                json_object('usd_micros_per_month', NEW.usd_micros_per_month));
    END
    """,
    """
    CREATE TRIGGER spend_caps_audit_update AFTER UPDATE ON spend_caps
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.updated_at, NEW.updated_by,
                CASE WHEN NEW.usd_micros_per_month IS NULL
                     THEN 'clear_spend_cap' ELSE 'set_spend_cap' END,
                'workspace', NEW.platform, NEW.workspace_id, '',
                json_object('usd_micros_per_month', OLD.usd_micros_per_month),
                json_object('usd_micros_per_month', NEW.usd_micros_per_month));
    END
    """,
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
"""``MIGRATIONS[i]`` takes the database from ``user_version`` i to i + 1."""

SCHEMA_VERSION = len(MIGRATIONS)


async def _user_version(db: aiosqlite.Connection) -> int:
    rows = list(await db.execute_fetchall("PRAGMA user_version"))
    return int(rows[0][0])


async def migrate(db: aiosqlite.Connection) -> int:
    """Bring the database up to ``SCHEMA_VERSION``; returns the version it found.

    Runs before the connection is shared, so awaiting between the statements of the migration
    transaction is safe. ``BEGIN IMMEDIATE`` serialises two processes opening a new file at
    once: the second re-reads the version after the first has committed.
    """
    found = await _user_version(db)
    if found == SCHEMA_VERSION:
        return found
    await db.execute("BEGIN IMMEDIATE")
    try:
        current = await _user_version(db)
        if current > SCHEMA_VERSION:
            raise ConfigError(
                f"the database is at schema version {current}, newer than this imagine-bot "
                f"(version {SCHEMA_VERSION}); upgrade imagine-bot or restore a backup"
            )
        for version in range(current, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                await db.execute(statement)
            # PRAGMA takes no parameters; the value is our own integer.
            await db.execute(f"PRAGMA user_version = {version + 1}")
            log.info("ledger schema migrated to version %d", version + 1)
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    return found

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

Tables (version 2, moderation):

``moderation_rules``
    A server's blocked terms and patterns and its channel allow-list (``kind``), soft-deleted
    through ``active`` so that the audit trigger knows who removed one.
``moderation_settings``
    A server's review channel and its Discord spoiler switch.
``reviews``
    One row per refused prompt, with the whole request so that an approved one can run after a
    restart: ``refused`` -> ``pending`` (the user asked an admin) -> ``approved`` | ``denied``.
    Inserting one writes its ``moderation_log`` row; a decision writes an ``audit`` row.
``moderation_log``
    Who was refused, where, the prompt, what matched (``source``, ``rule``) and when.

Version 3, leases (``bot.store.lease``):

``boots``
    One row per process that opened the database: its machine and process identity, its lease
    (``expires_at``, renewed while it runs) and ``stopped_at`` once it exited or was found dead.
``jobs.owner``, ``jobs.deadline``
    The boot that holds a job and when the job must be over (its owner's job timeout): an
    orphan (owner stopped or lease expired, or deadline passed) is refunded by any process.
``jobs.reach``, ``jobs.notice``
    How to tell the member about the job after a restart (platform-specific JSON the adapter
    gave), and ``pending`` -> ``claimed:<boot>`` -> ``sent`` for that notice.
``clicks``
    The last time each (member, button, result) was pressed, so a second click within the
    debounce window does not start a second job, whichever process receives it.
"""

from __future__ import annotations

import aiosqlite

from bot.store.migration import apply

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

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

# Version 2: moderation (issue 7). Rules are soft-deleted (``active``) so that the trigger
# writing the audit row knows who removed them; refusals and decisions audit themselves too.
_V2: tuple[str, ...] = (
    """
    CREATE TABLE moderation_rules (
        platform     TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        kind         TEXT NOT NULL CHECK (kind IN ('term', 'pattern', 'channel')),
        value        TEXT NOT NULL,
        active       INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
        updated_at   TEXT NOT NULL,
        updated_by   TEXT NOT NULL,
        PRIMARY KEY (platform, workspace_id, kind, value)
    ) WITHOUT ROWID
    """,
    """
    CREATE TRIGGER moderation_rules_audit_insert AFTER INSERT ON moderation_rules
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.updated_at, NEW.updated_by,
                CASE NEW.kind WHEN 'channel' THEN 'allow_channel' ELSE 'block_' || NEW.kind END,
                'workspace', NEW.platform, NEW.workspace_id, NEW.value,
                NULL, json_object('active', NEW.active));
    END
    """,
    """
    CREATE TRIGGER moderation_rules_audit_update AFTER UPDATE OF active ON moderation_rules
    WHEN OLD.active <> NEW.active
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.updated_at, NEW.updated_by,
                CASE
                    WHEN NEW.kind = 'channel' AND NEW.active THEN 'allow_channel'
                    WHEN NEW.kind = 'channel' THEN 'disallow_channel'
                    WHEN NEW.active THEN 'block_' || NEW.kind
                    ELSE 'unblock_' || NEW.kind
                END,
                'workspace', NEW.platform, NEW.workspace_id, NEW.value,
                json_object('active', OLD.active), json_object('active', NEW.active));
    END
    """,
    """
    CREATE TABLE moderation_settings (
        platform          TEXT NOT NULL,
        workspace_id      TEXT NOT NULL,
        review_channel_id TEXT,
        spoilers          INTEGER NOT NULL DEFAULT 0 CHECK (spoilers IN (0, 1)),
        updated_at        TEXT NOT NULL,
        updated_by        TEXT NOT NULL,
        PRIMARY KEY (platform, workspace_id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TRIGGER moderation_settings_audit_insert AFTER INSERT ON moderation_settings
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        SELECT NEW.updated_at, NEW.updated_by, 'set_review_channel', 'workspace',
               NEW.platform, NEW.workspace_id, '', NULL,
               json_object('review_channel_id', NEW.review_channel_id)
        WHERE NEW.review_channel_id IS NOT NULL;
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        SELECT NEW.updated_at, NEW.updated_by, 'set_spoilers', 'workspace',
               NEW.platform, NEW.workspace_id, '', NULL, json_object('spoilers', NEW.spoilers)
        WHERE NEW.spoilers <> 0;
    END
    """,
    """
    CREATE TRIGGER moderation_settings_audit_review AFTER UPDATE OF review_channel_id
    ON moderation_settings
    WHEN OLD.review_channel_id IS NOT NEW.review_channel_id
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.updated_at, NEW.updated_by, 'set_review_channel', 'workspace',
                NEW.platform, NEW.workspace_id, '',
                json_object('review_channel_id', OLD.review_channel_id),
                json_object('review_channel_id', NEW.review_channel_id));
    END
    """,
    """
    CREATE TRIGGER moderation_settings_audit_spoilers AFTER UPDATE OF spoilers
    ON moderation_settings
    WHEN OLD.spoilers <> NEW.spoilers
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.updated_at, NEW.updated_by, 'set_spoilers', 'workspace',
                NEW.platform, NEW.workspace_id, '',
                json_object('spoilers', OLD.spoilers), json_object('spoilers', NEW.spoilers));
    END
    """,
    """
    CREATE TABLE reviews (
        review_id       TEXT PRIMARY KEY,
        platform        TEXT NOT NULL,
        workspace_id    TEXT NOT NULL,
        channel_id      TEXT NOT NULL,
        user_id         TEXT NOT NULL,
        role_ids        TEXT NOT NULL DEFAULT '[]',
        display_name    TEXT NOT NULL DEFAULT '',
        prompt          TEXT NOT NULL,
        negative_prompt TEXT,
        model           TEXT NOT NULL,
        size            TEXT NOT NULL,
        n               INTEGER NOT NULL,
        seed            INTEGER,
        source          TEXT NOT NULL,
        rule            TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'refused'
                        CHECK (state IN ('refused', 'pending', 'approved', 'denied')),
        created_at      TEXT NOT NULL,
        requested_at    TEXT,
        decided_by      TEXT,
        decided_at      TEXT
    )
    """,
    """
    CREATE TABLE moderation_log (
        id              INTEGER PRIMARY KEY,
        at              TEXT NOT NULL,
        platform        TEXT NOT NULL,
        workspace_id    TEXT NOT NULL,
        channel_id      TEXT NOT NULL,
        user_id         TEXT NOT NULL,
        prompt          TEXT NOT NULL,
        negative_prompt TEXT,
        source          TEXT NOT NULL,
        rule            TEXT NOT NULL,
        review_id       TEXT
    )
    """,
    "CREATE INDEX moderation_log_workspace ON moderation_log (platform, workspace_id, at)",
    # A refusal is one statement: the review row, and by this trigger its log row.
    """
    CREATE TRIGGER reviews_log AFTER INSERT ON reviews
    BEGIN
        INSERT INTO moderation_log (at, platform, workspace_id, channel_id, user_id, prompt,
                                    negative_prompt, source, rule, review_id)
        VALUES (NEW.created_at, NEW.platform, NEW.workspace_id, NEW.channel_id, NEW.user_id,
                NEW.prompt, NEW.negative_prompt, NEW.source, NEW.rule, NEW.review_id);
    END
    """,
    """
    CREATE TRIGGER reviews_audit_decision AFTER UPDATE OF state ON reviews
    WHEN NEW.state IN ('approved', 'denied') AND OLD.state = 'pending'
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.decided_at, NEW.platform || ':' || NEW.decided_by,
                CASE NEW.state WHEN 'approved' THEN 'approve_review' ELSE 'deny_review' END,
                'user', NEW.platform, NEW.workspace_id, NEW.user_id,
                json_object('review_id', NEW.review_id, 'state', OLD.state),
                json_object('review_id', NEW.review_id, 'state', NEW.state));
    END
    """,
    # A decided review stays decided.
    """
    CREATE TRIGGER reviews_final BEFORE UPDATE OF state ON reviews
    WHEN OLD.state IN ('approved', 'denied')
    BEGIN
        SELECT RAISE(ABORT, 'review is already decided');
    END
    """,
)

_V3: tuple[str, ...] = (
    """
    CREATE TABLE boots (
        boot_id       TEXT PRIMARY KEY,
        host          TEXT NOT NULL,
        pid           INTEGER NOT NULL,
        started       TEXT NOT NULL,
        started_at    TEXT NOT NULL,
        expires_at    TEXT NOT NULL,
        stopped_at    TEXT
    )
    """,
    "ALTER TABLE jobs ADD COLUMN owner TEXT",
    "ALTER TABLE jobs ADD COLUMN deadline TEXT",
    "ALTER TABLE jobs ADD COLUMN reach TEXT",
    "ALTER TABLE jobs ADD COLUMN notice TEXT",
    "CREATE INDEX jobs_notice ON jobs (platform) WHERE notice = 'pending'",
    """
    CREATE TABLE clicks (
        click_key     TEXT PRIMARY KEY,
        at            TEXT NOT NULL
    ) WITHOUT ROWID
    """,
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3)
"""``MIGRATIONS[i]`` takes the database from ``user_version`` i to i + 1."""

SCHEMA_VERSION = len(MIGRATIONS)


async def _user_version(db: aiosqlite.Connection) -> int:
    rows = list(await db.execute_fetchall("PRAGMA user_version"))
    return int(rows[0][0])


async def _set_user_version(db: aiosqlite.Connection, version: int) -> None:
    # PRAGMA takes no parameters; the value is our own integer.
    await db.execute(f"PRAGMA user_version = {int(version)}")


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
        await apply(
            MIGRATIONS,
            await _user_version(db),
            execute=db.execute,
            set_version=lambda version: _set_user_version(db, version),
        )
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    return found

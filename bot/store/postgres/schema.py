"""The PostgreSQL schema and its forward migrations (a ``schema_version`` table).

Tables, columns and their meaning are those of SQLite's latest schema (``bot.store.schema``),
with the same names, so ``imagine-bot db copy`` copies table by table and a row reads the same
on either database: timestamps are TEXT in ``bot.store.row.stamp``'s sortable format, JSON is
TEXT written as SQLite's ``json_object`` writes it, money and counts are BIGINT. Triggers
(PL/pgSQL) keep the usage counters and the audit rows in step with the statement that changes
a job or a limit, as SQLite's triggers do.

Every migration runs in one transaction under a transaction-scoped advisory lock, together
with the new version number: two processes starting at once on a new database migrate it
once (the second waits, then finds it done), and a crash leaves the old version or the new
one. Add a migration by appending to ``MIGRATIONS``; never edit one that has shipped.

Version 1 is the ledger's tables, then the moderation store's (``MODERATION``), then the
cluster job queue's (``QUEUE``): the later ones may refer to ``audit`` and ``jobs``.

Counters are always locked in one order (the user's day row, the user's month row, then the
workspace's month row), each in a statement of its own, so that holds and settlements racing
on the same rows wait for each other instead of deadlocking.
"""

from __future__ import annotations

from bot.store.migration import apply
from bot.store.postgres.connection import Connection, Pool
from bot.store.postgres.moderation_schema import MODERATION
from bot.store.postgres.queue_schema import QUEUE

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

# The advisory lock key of migrations (any constant bigint; other keys hash a text).
_MIGRATION_LOCK = 0x696D6167696E65  # "imagine"

_LEDGER: tuple[str, ...] = (
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
        n               BIGINT NOT NULL,
        seed            BIGINT,
        negative_prompt TEXT,
        state           TEXT NOT NULL DEFAULT 'held'
                        CHECK (state IN ('held', 'charged', 'refunded')),
        held_images     BIGINT NOT NULL CHECK (held_images >= 0),
        held_micros     BIGINT NOT NULL CHECK (held_micros >= 0),
        charged_images  BIGINT NOT NULL DEFAULT 0
                        CHECK (charged_images BETWEEN 0 AND held_images),
        charged_micros  BIGINT NOT NULL DEFAULT 0
                        CHECK (charged_micros BETWEEN 0 AND held_micros),
        day             TEXT NOT NULL,
        month           TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        finished_at     TEXT,
        refund_reason   TEXT,
        owner           TEXT,
        deadline        TEXT,
        reach           TEXT,
        notice          TEXT
    )
    """,
    "CREATE INDEX jobs_created ON jobs (created_at)",
    "CREATE INDEX jobs_held ON jobs (created_at) WHERE state = 'held'",
    "CREATE INDEX jobs_notice ON jobs (platform) WHERE notice = 'pending'",
    """
    CREATE TABLE usage_counters (
        platform     TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        user_id      TEXT NOT NULL,
        period       TEXT NOT NULL,
        images       BIGINT NOT NULL DEFAULT 0,
        micros       BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (platform, workspace_id, user_id, period)
    )
    """,
    """
    CREATE TABLE workspace_counters (
        platform     TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        period       TEXT NOT NULL,
        images       BIGINT NOT NULL DEFAULT 0,
        micros       BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (platform, workspace_id, period)
    )
    """,
    # A hold adds to the user's day and month and to the workspace's month ...
    """
    CREATE FUNCTION jobs_hold() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO usage_counters AS c (platform, workspace_id, user_id, period, images, micros)
        VALUES (NEW.platform, NEW.workspace_id, NEW.user_id, 'D' || NEW.day,
                NEW.held_images, NEW.held_micros)
        ON CONFLICT (platform, workspace_id, user_id, period) DO UPDATE SET
            images = c.images + excluded.images, micros = c.micros + excluded.micros;
        INSERT INTO usage_counters AS c (platform, workspace_id, user_id, period, images, micros)
        VALUES (NEW.platform, NEW.workspace_id, NEW.user_id, 'M' || NEW.month,
                NEW.held_images, NEW.held_micros)
        ON CONFLICT (platform, workspace_id, user_id, period) DO UPDATE SET
            images = c.images + excluded.images, micros = c.micros + excluded.micros;
        INSERT INTO workspace_counters AS c (platform, workspace_id, period, images, micros)
        VALUES (NEW.platform, NEW.workspace_id, 'M' || NEW.month,
                NEW.held_images, NEW.held_micros)
        ON CONFLICT (platform, workspace_id, period) DO UPDATE SET
            images = c.images + excluded.images, micros = c.micros + excluded.micros;
        RETURN NULL;
    END
    $$
    """,
    "CREATE TRIGGER jobs_hold AFTER INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_hold()",
    # ... settling it gives back what was held but not charged (all of it on a refund; nothing,
    # and no counter row is rewritten, when everything held was delivered) ...
    """
    CREATE FUNCTION jobs_settle() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE usage_counters SET
            images = images - (OLD.held_images - NEW.charged_images),
            micros = micros - (OLD.held_micros - NEW.charged_micros)
        WHERE platform = OLD.platform AND workspace_id = OLD.workspace_id
          AND user_id = OLD.user_id AND period = 'D' || OLD.day;
        UPDATE usage_counters SET
            images = images - (OLD.held_images - NEW.charged_images),
            micros = micros - (OLD.held_micros - NEW.charged_micros)
        WHERE platform = OLD.platform AND workspace_id = OLD.workspace_id
          AND user_id = OLD.user_id AND period = 'M' || OLD.month;
        UPDATE workspace_counters SET
            images = images - (OLD.held_images - NEW.charged_images),
            micros = micros - (OLD.held_micros - NEW.charged_micros)
        WHERE platform = OLD.platform AND workspace_id = OLD.workspace_id
          AND period = 'M' || OLD.month;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER jobs_settle AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN (OLD.state = 'held' AND NEW.state <> 'held'
          AND (NEW.charged_images < OLD.held_images OR NEW.charged_micros < OLD.held_micros))
    EXECUTE FUNCTION jobs_settle()
    """,
    # ... and a settled job never changes state again.
    """
    CREATE FUNCTION jobs_final() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'job is already settled';
    END
    $$
    """,
    """
    CREATE TRIGGER jobs_final BEFORE UPDATE OF state ON jobs FOR EACH ROW
    WHEN (OLD.state <> 'held') EXECUTE FUNCTION jobs_final()
    """,
    """
    CREATE TABLE limits (
        platform             TEXT NOT NULL,
        workspace_id         TEXT NOT NULL,
        kind                 TEXT NOT NULL CHECK (kind IN ('workspace', 'role', 'user')),
        subject_id           TEXT NOT NULL,
        images_per_day       BIGINT CHECK (images_per_day >= 0),
        images_per_month     BIGINT CHECK (images_per_month >= 0),
        usd_micros_per_month BIGINT CHECK (usd_micros_per_month >= 0),
        updated_at           TEXT NOT NULL,
        updated_by           TEXT NOT NULL,
        PRIMARY KEY (platform, workspace_id, kind, subject_id)
    )
    """,
    """
    CREATE TABLE spend_caps (
        platform             TEXT NOT NULL,
        workspace_id         TEXT NOT NULL,
        usd_micros_per_month BIGINT CHECK (usd_micros_per_month >= 0),
        updated_at           TEXT NOT NULL,
        updated_by           TEXT NOT NULL,
        PRIMARY KEY (platform, workspace_id)
    )
    """,
    # BY DEFAULT: a copy from SQLite keeps its ids (and so the log's order).
    """
    CREATE TABLE audit (
        id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
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
    # SQLite's json_object text exactly ({"a":1,"b":null}), so copied rows compare equal.
    """
    CREATE FUNCTION limits_json(day BIGINT, month BIGINT, usd BIGINT) RETURNS TEXT
    LANGUAGE sql IMMUTABLE AS $$
        SELECT '{"images_per_day":' || coalesce(day::text, 'null')
            || ',"images_per_month":' || coalesce(month::text, 'null')
            || ',"usd_micros_per_month":' || coalesce(usd::text, 'null') || '}'
    $$
    """,
    """
    CREATE FUNCTION spend_cap_json(usd BIGINT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
        SELECT '{"usd_micros_per_month":' || coalesce(usd::text, 'null') || '}'
    $$
    """,
    """
    CREATE FUNCTION limits_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.updated_at, NEW.updated_by,
                CASE WHEN TG_OP = 'UPDATE' AND NEW.images_per_day IS NULL
                          AND NEW.images_per_month IS NULL AND NEW.usd_micros_per_month IS NULL
                     THEN 'clear_limits' ELSE 'set_limits' END,
                NEW.kind, NEW.platform, NEW.workspace_id, NEW.subject_id,
                CASE WHEN TG_OP = 'UPDATE' THEN
                    limits_json(OLD.images_per_day, OLD.images_per_month,
                                OLD.usd_micros_per_month) END,
                limits_json(NEW.images_per_day, NEW.images_per_month,
                            NEW.usd_micros_per_month));
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER limits_audit AFTER INSERT OR UPDATE ON limits FOR EACH ROW
    EXECUTE FUNCTION limits_audit()
    """,
    """
    CREATE FUNCTION spend_caps_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.updated_at, NEW.updated_by,
                CASE WHEN TG_OP = 'UPDATE' AND NEW.usd_micros_per_month IS NULL
                     THEN 'clear_spend_cap' ELSE 'set_spend_cap' END,
                'workspace', NEW.platform, NEW.workspace_id, '',
                CASE WHEN TG_OP = 'UPDATE' THEN spend_cap_json(OLD.usd_micros_per_month) END,
                spend_cap_json(NEW.usd_micros_per_month));
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER spend_caps_audit AFTER INSERT OR UPDATE ON spend_caps FOR EACH ROW
    EXECUTE FUNCTION spend_caps_audit()
    """,
    """
    CREATE TABLE boots (
        boot_id       TEXT PRIMARY KEY,
        host          TEXT NOT NULL,
        pid           BIGINT NOT NULL,
        started       TEXT NOT NULL,
        started_at    TEXT NOT NULL,
        expires_at    TEXT NOT NULL,
        stopped_at    TEXT
    )
    """,
    """
    CREATE TABLE clicks (
        click_key     TEXT PRIMARY KEY,
        at            TEXT NOT NULL
    )
    """,
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_LEDGER + MODERATION + QUEUE,)
"""``MIGRATIONS[i]`` takes the database from version i to i + 1."""

SCHEMA_VERSION = len(MIGRATIONS)

_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_version (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        version  INTEGER NOT NULL
    )
"""

_SET_VERSION = """
    INSERT INTO schema_version (version) VALUES ($1)
    ON CONFLICT (only_row) DO UPDATE SET version = excluded.version
"""


async def _version(connection: Connection) -> int:
    # pg_tables, not to_regclass: the name cache of a session that waited on the advisory
    # lock may still say "no such table" after the other process created it.
    exists = await connection.fetchval(
        """
        SELECT EXISTS (SELECT FROM pg_catalog.pg_tables
                       WHERE schemaname = current_schema() AND tablename = 'schema_version')
        """
    )
    if not exists:
        return 0
    found = await connection.fetchval("SELECT version FROM schema_version")
    return 0 if found is None else int(found)


async def migrate(pool: Pool) -> int:
    """Bring the database up to ``SCHEMA_VERSION``; returns the version it found."""
    async with pool.acquire() as connection:
        found = await _version(connection)
        if found == SCHEMA_VERSION:
            return found
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            # Read again under the lock: another process may have migrated meanwhile.
            current = await _version(connection)
            # Rolled back with the rest when the database is refused as too new.
            await connection.execute(_VERSION_TABLE)
            await apply(
                MIGRATIONS,
                current,
                execute=connection.execute,
                set_version=lambda version: connection.execute(_SET_VERSION, version),
            )
    return found

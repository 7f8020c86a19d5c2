"""PostgreSQL tables of the moderation store (``bot.store.postgres.moderation``), created by
``bot.store.postgres.schema``'s first migration after the ledger's tables.

The tables, columns and audit rows are SQLite's version 2 (``bot.store.schema``): rules
soft-deleted through ``active``, settings, reviews and the moderation log. Where SQLite writes
audit and log rows by trigger, so does this, with PL/pgSQL trigger functions: a change and its
audit row are one statement, whichever process makes it.

Text that is sorted or compared by range is ``COLLATE "C"``: rule values come back in SQLite's
byte order and stamps (``bot.store.row.stamp``) compare as the fixed-width strings they are,
whatever locale the database was created with. Flags stay ``INTEGER`` 0/1 as on SQLite, so the
audit JSON (``TEXT``) is written as SQLite writes it.
"""

from __future__ import annotations

__all__ = ["MODERATION"]

MODERATION: tuple[str, ...] = (
    # SQLite's json_object text exactly ({"a":1,"b":null}), as the ledger's audit rows are, so
    # rows copied from SQLite compare equal. Keys are ours; values come in as JSON.
    """
    CREATE FUNCTION moderation_json(key TEXT, value JSON, key2 TEXT = NULL, value2 JSON = NULL)
    RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
        SELECT '{' || to_json(key)::text || ':' || coalesce(value::text, 'null')
            || CASE WHEN key2 IS NULL THEN ''
                    ELSE ',' || to_json(key2)::text || ':' || coalesce(value2::text, 'null')
               END
            || '}'
    $$
    """,
    """
    CREATE TABLE moderation_rules (
        platform     TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        kind         TEXT NOT NULL CHECK (kind IN ('term', 'pattern', 'channel')),
        value        TEXT COLLATE "C" NOT NULL,
        active       INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
        updated_at   TEXT COLLATE "C" NOT NULL,
        updated_by   TEXT NOT NULL,
        PRIMARY KEY (platform, workspace_id, kind, value)
    )
    """,
    """
    CREATE FUNCTION moderation_rules_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.updated_at, NEW.updated_by,
                CASE
                    WHEN NEW.kind = 'channel' AND NEW.active = 1 THEN 'allow_channel'
                    WHEN NEW.kind = 'channel' THEN 'disallow_channel'
                    WHEN NEW.active = 1 THEN 'block_' || NEW.kind
                    ELSE 'unblock_' || NEW.kind
                END,
                'workspace', NEW.platform, NEW.workspace_id, NEW.value,
                CASE WHEN TG_OP = 'UPDATE'
                     THEN moderation_json('active', to_json(OLD.active)) END,
                moderation_json('active', to_json(NEW.active)));
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER moderation_rules_audit_insert AFTER INSERT ON moderation_rules
    FOR EACH ROW EXECUTE FUNCTION moderation_rules_audit()
    """,
    """
    CREATE TRIGGER moderation_rules_audit_update AFTER UPDATE OF active ON moderation_rules
    FOR EACH ROW WHEN (OLD.active <> NEW.active) EXECUTE FUNCTION moderation_rules_audit()
    """,
    """
    CREATE TABLE moderation_settings (
        platform          TEXT NOT NULL,
        workspace_id      TEXT NOT NULL,
        review_channel_id TEXT,
        spoilers          INTEGER NOT NULL DEFAULT 0 CHECK (spoilers IN (0, 1)),
        updated_at        TEXT COLLATE "C" NOT NULL,
        updated_by        TEXT NOT NULL,
        PRIMARY KEY (platform, workspace_id)
    )
    """,
    # One function for the row's first insert and for its updates: each setting that changed
    # (or, on insert, that differs from its default) is one audit row, review channel first.
    """
    CREATE FUNCTION moderation_settings_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        first boolean := TG_OP = 'INSERT';
    BEGIN
        IF (first AND NEW.review_channel_id IS NOT NULL)
           OR (NOT first AND OLD.review_channel_id IS DISTINCT FROM NEW.review_channel_id) THEN
            INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id,
                               subject_id, old, new)
            VALUES (NEW.updated_at, NEW.updated_by, 'set_review_channel', 'workspace',
                    NEW.platform, NEW.workspace_id, '',
                    CASE WHEN NOT first THEN
                        moderation_json('review_channel_id', to_json(OLD.review_channel_id))
                    END,
                    moderation_json('review_channel_id', to_json(NEW.review_channel_id)));
        END IF;
        IF (first AND NEW.spoilers <> 0)
           OR (NOT first AND OLD.spoilers <> NEW.spoilers) THEN
            INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id,
                               subject_id, old, new)
            VALUES (NEW.updated_at, NEW.updated_by, 'set_spoilers', 'workspace',
                    NEW.platform, NEW.workspace_id, '',
                    CASE WHEN NOT first THEN moderation_json('spoilers', to_json(OLD.spoilers))
                    END,
                    moderation_json('spoilers', to_json(NEW.spoilers)));
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER moderation_settings_audit_insert AFTER INSERT ON moderation_settings
    FOR EACH ROW EXECUTE FUNCTION moderation_settings_audit()
    """,
    """
    CREATE TRIGGER moderation_settings_audit_update
    AFTER UPDATE OF review_channel_id, spoilers ON moderation_settings
    FOR EACH ROW
    WHEN (OLD.review_channel_id IS DISTINCT FROM NEW.review_channel_id
          OR OLD.spoilers <> NEW.spoilers)
    EXECUTE FUNCTION moderation_settings_audit()
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
        n               BIGINT NOT NULL,
        seed            BIGINT,
        source          TEXT NOT NULL,
        rule            TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'refused'
                        CHECK (state IN ('refused', 'pending', 'approved', 'denied')),
        created_at      TEXT COLLATE "C" NOT NULL,
        requested_at    TEXT COLLATE "C",
        decided_by      TEXT,
        decided_at      TEXT COLLATE "C"
    )
    """,
    # BY DEFAULT: a copy from SQLite keeps its ids (and so the log's order).
    """
    CREATE TABLE moderation_log (
        id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at              TEXT COLLATE "C" NOT NULL,
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
    CREATE FUNCTION reviews_log() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO moderation_log (at, platform, workspace_id, channel_id, user_id, prompt,
                                    negative_prompt, source, rule, review_id)
        VALUES (NEW.created_at, NEW.platform, NEW.workspace_id, NEW.channel_id, NEW.user_id,
                NEW.prompt, NEW.negative_prompt, NEW.source, NEW.rule, NEW.review_id);
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER reviews_log AFTER INSERT ON reviews
    FOR EACH ROW EXECUTE FUNCTION reviews_log()
    """,
    """
    CREATE FUNCTION reviews_audit_decision() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO audit (at, actor, action, scope_kind, platform, workspace_id, subject_id,
                           old, new)
        VALUES (NEW.decided_at, NEW.platform || ':' || NEW.decided_by,
                CASE NEW.state WHEN 'approved' THEN 'approve_review' ELSE 'deny_review' END,
                'user', NEW.platform, NEW.workspace_id, NEW.user_id,
                moderation_json('review_id', to_json(NEW.review_id),
                                'state', to_json(OLD.state)),
                moderation_json('review_id', to_json(NEW.review_id),
                                'state', to_json(NEW.state)));
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER reviews_audit_decision AFTER UPDATE OF state ON reviews
    FOR EACH ROW
    WHEN (NEW.state IN ('approved', 'denied') AND OLD.state = 'pending')
    EXECUTE FUNCTION reviews_audit_decision()
    """,
    # A decided review stays decided, whatever statement tries to change it.
    """
    CREATE FUNCTION reviews_final() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'review is already decided';
    END
    $$
    """,
    """
    CREATE TRIGGER reviews_final BEFORE UPDATE OF state ON reviews
    FOR EACH ROW WHEN (OLD.state IN ('approved', 'denied'))
    EXECUTE FUNCTION reviews_final()
    """,
)

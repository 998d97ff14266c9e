-- The audit log on PostgreSQL: the same table, columns and meaning as migrations/sqlite/0001,
-- so a log copied between the two verifies to the same head hash. `event` is the canonical JSON
-- that was hashed and is the source of truth; the other columns are copies of its fields for
-- filtering. Types stay TEXT where SQLite has TEXT (timestamps as RFC 3339 text with six
-- fractional digits and 'Z', so text order is time order; UUIDs and JSON as text), so both
-- backends hold byte-identical values.

CREATE TABLE store_meta (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    -- Names what this database is, so the CLI can refuse one that is not an audit log.
    application  TEXT NOT NULL,
    -- Version of the canonical JSON + hash rule (store/chain.rs); bumped only with a new rule.
    chain_format INTEGER NOT NULL
);

INSERT INTO store_meta (id, application, chain_format) VALUES (1, 'syncgate audit log', 1);

CREATE TABLE audit_events (
    seq               BIGINT PRIMARY KEY,
    event_id          TEXT NOT NULL UNIQUE,
    operation_id      TEXT NOT NULL,
    kind              TEXT NOT NULL,
    time              TEXT NOT NULL,
    partner_tenant_id TEXT,
    operation         TEXT,
    actor_oid         TEXT,
    actor_upn         TEXT,
    actor_appid       TEXT,
    decision          TEXT,
    upstream_status   BIGINT,
    state_path        TEXT,
    event             TEXT NOT NULL,
    prev_hash         TEXT NOT NULL,
    hash              TEXT NOT NULL
);

CREATE INDEX audit_events_operation ON audit_events (operation_id, seq);
CREATE INDEX audit_events_partner_time ON audit_events (partner_tenant_id, time);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_kind ON audit_events (kind, seq);
CREATE INDEX audit_events_state_path ON audit_events (state_path, seq);

-- Append-only, as on SQLite; PostgreSQL also has TRUNCATE, which row triggers do not see.
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- store_meta says what the database is; it does not change either.
CREATE TRIGGER store_meta_no_update BEFORE UPDATE OR DELETE ON store_meta
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TRIGGER store_meta_no_truncate BEFORE TRUNCATE ON store_meta
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

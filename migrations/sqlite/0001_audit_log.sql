-- The audit log: one row per event, hash-chained, append-only.
--
-- Portable on purpose (migrations/postgres/0001_audit_log.sql will mirror it): no AUTOINCREMENT,
-- the application assigns `seq` from the chain head inside the write transaction; timestamps,
-- UUIDs and JSON are TEXT. `event` is the canonical JSON that was hashed and is the source of
-- truth; the other columns are copies of its fields for filtering, and `syncgate audit verify`
-- checks that they still agree with it.

CREATE TABLE store_meta (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    -- Names what this file is, so the CLI can refuse a database that is not an audit log.
    application  TEXT NOT NULL,
    -- Version of the canonical JSON + hash rule (store/chain.rs); bumped only with a new rule.
    chain_format INTEGER NOT NULL
);

INSERT INTO store_meta (id, application, chain_format) VALUES (1, 'syncgate audit log', 1);

CREATE TABLE audit_events (
    seq               INTEGER PRIMARY KEY,
    event_id          TEXT NOT NULL UNIQUE,
    operation_id      TEXT NOT NULL,
    kind              TEXT NOT NULL,
    -- RFC 3339 UTC with exactly six fractional digits and 'Z', so text order is time order.
    time              TEXT NOT NULL,
    partner_tenant_id TEXT,
    operation         TEXT,
    actor_oid         TEXT,
    actor_upn         TEXT,
    actor_appid       TEXT,
    decision          TEXT,
    upstream_status   INTEGER,
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

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

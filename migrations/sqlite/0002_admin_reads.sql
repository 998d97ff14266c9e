-- Who read the audit log through the admin API: one row per answered request, append-only.
--
-- Kept apart from audit_events on purpose: a SIEM shipper long-polling /api/v1/events would
-- otherwise append an event describing each of its own reads, which it would then read, forever;
-- and the governed operations would drown among reads. Not hash-chained: the table is a record
-- of access, refused UPDATE and DELETE like the log, not a second chain to verify.
-- `id` is SQLite's rowid (never reused: rows are never deleted), the order rows were recorded in.

CREATE TABLE admin_reads (
    id            INTEGER PRIMARY KEY,
    -- RFC 3339 UTC with six fractional digits and 'Z', as audit_events.time.
    time          TEXT NOT NULL,
    principal     TEXT NOT NULL,
    principal_oid TEXT,
    method        TEXT NOT NULL,
    route         TEXT NOT NULL,
    query         TEXT,
    status        INTEGER NOT NULL,
    rows_returned INTEGER NOT NULL,
    remote_addr   TEXT NOT NULL
);

CREATE TRIGGER admin_reads_no_update BEFORE UPDATE ON admin_reads
BEGIN
    SELECT RAISE(ABORT, 'admin_reads is append-only');
END;

CREATE TRIGGER admin_reads_no_delete BEFORE DELETE ON admin_reads
BEGIN
    SELECT RAISE(ABORT, 'admin_reads is append-only');
END;

-- Who read the audit log through the admin API: the same table and meaning as
-- migrations/sqlite/0002 (see there why it is not part of the hash chain). The id comes from an
-- identity column, since replicas sharing the database record reads at the same time.

CREATE TABLE admin_reads (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time          TEXT NOT NULL,
    principal     TEXT NOT NULL,
    principal_oid TEXT,
    method        TEXT NOT NULL,
    route         TEXT NOT NULL,
    query         TEXT,
    status        BIGINT NOT NULL,
    rows_returned BIGINT NOT NULL,
    remote_addr   TEXT NOT NULL
);

CREATE FUNCTION admin_reads_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'admin_reads is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER admin_reads_no_update BEFORE UPDATE ON admin_reads
    FOR EACH ROW EXECUTE FUNCTION admin_reads_append_only();

CREATE TRIGGER admin_reads_no_delete BEFORE DELETE ON admin_reads
    FOR EACH ROW EXECUTE FUNCTION admin_reads_append_only();

CREATE TRIGGER admin_reads_no_truncate BEFORE TRUNCATE ON admin_reads
    FOR EACH STATEMENT EXECUTE FUNCTION admin_reads_append_only();

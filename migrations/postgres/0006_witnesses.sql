-- Delivering signed checkpoints to witnesses: the same tables as migrations/sqlite/0006 (see
-- there for what they mean), BIGINT for INTEGER.
CREATE TABLE witness_state (
    witness      TEXT PRIMARY KEY,
    delivered    BIGINT NOT NULL,
    attempts     BIGINT NOT NULL,
    last_error   TEXT,
    last_attempt TEXT NOT NULL
);

CREATE TABLE checkpoint_cosignatures (
    size      BIGINT NOT NULL,
    witness   TEXT NOT NULL,
    time      TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);

-- Append-only, as on SQLite (TRUNCATE included).
CREATE FUNCTION checkpoint_cosignatures_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'checkpoint_cosignatures is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER checkpoint_cosignatures_no_update BEFORE UPDATE OR DELETE ON checkpoint_cosignatures
    FOR EACH ROW EXECUTE FUNCTION checkpoint_cosignatures_append_only();

CREATE TRIGGER checkpoint_cosignatures_no_truncate BEFORE TRUNCATE ON checkpoint_cosignatures
    FOR EACH STATEMENT EXECUTE FUNCTION checkpoint_cosignatures_append_only();

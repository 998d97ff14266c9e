-- The Merkle tree and the signed checkpoints on PostgreSQL: the same tables as
-- migrations/sqlite/0005 (see there for what they mean), BIGINT for INTEGER and BYTEA for BLOB.
CREATE TABLE merkle_nodes (
    id   BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL
);

CREATE TABLE merkle_state (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL
);

INSERT INTO merkle_state (id, size) VALUES (1, 0);

CREATE TABLE checkpoints (
    size BIGINT PRIMARY KEY,
    root BYTEA NOT NULL,
    time TEXT NOT NULL,
    note TEXT NOT NULL
);

-- Append-only, as on SQLite (TRUNCATE included, which row triggers do not see).
CREATE FUNCTION checkpoints_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'checkpoints is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION checkpoints_append_only();

CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION checkpoints_append_only();

-- Tamper evidence beyond the hash chain (docs/transparency.md): the RFC 6962 Merkle tree over
-- the events, and the checkpoints of it the writer signs.
--
-- merkle_nodes holds the tree's *perfect* nodes (2^level leaves, aligned), which never change
-- once complete; every hash an inclusion or consistency proof needs is one of them or the fold
-- of a few (audit/merkle.rs). A node's id is its in-order number, index·2^(level+1) + 2^level − 1,
-- one integer key for (level, index). Leaf i (level 0) is the event with seq i + 1. The writer
-- adds the nodes an append completes in the events' own transaction, so merkle_state.size
-- equals the chain head in every snapshot once the tree has caught up (a log written before this
-- migration is hashed in at the writer's open). Derived, like the operations index: anyone who
-- can write the database can write these rows, so they are not evidence; the signed checkpoints
-- are, and `syncgate audit verify` recomputes the tree from the events.
CREATE TABLE merkle_nodes (
    id   INTEGER PRIMARY KEY,
    hash BLOB NOT NULL
);

CREATE TABLE merkle_state (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL
);

INSERT INTO merkle_state (id, size) VALUES (1, 0);

-- Checkpoints the writer signed (C2SP tlog-checkpoint in a signed note), one per tree size:
-- `note` is the signed text exactly as signed and sent to witnesses; root and time are copies
-- of its body for queries. Append-only, like the events.
CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    time TEXT NOT NULL,
    note TEXT NOT NULL
);

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints is append-only');
END;

CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints is append-only');
END;

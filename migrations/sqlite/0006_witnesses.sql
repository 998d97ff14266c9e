-- Delivering signed checkpoints to witnesses (docs/transparency.md): sinks the database's owner
-- does not control (a file on another volume, an HTTP witness, syslog). The checkpoints table is
-- the durable outbox: every checkpoint is kept, and witness_state says how far each configured
-- witness has received them, so a witness that is down gets the ones it missed, in order, when
-- it is back, across restarts. Delivery is at least once (two replicas may both send one).
CREATE TABLE witness_state (
    witness      TEXT PRIMARY KEY,
    -- The size of the last checkpoint the witness took (0: none yet); only moves forward.
    delivered    INTEGER NOT NULL,
    -- Failed attempts since the last delivery, and the last failure (for /metrics and logs).
    attempts     INTEGER NOT NULL,
    last_error   TEXT,
    -- RFC 3339 UTC of the last attempt, delivered or not.
    last_attempt TEXT NOT NULL
);

-- What a witness answered: its co-signature lines of one checkpoint, exactly as it sent them
-- (C2SP signed-note signature lines; docs/transparency.md). Append-only.
CREATE TABLE checkpoint_cosignatures (
    size      INTEGER NOT NULL,
    witness   TEXT NOT NULL,
    time      TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);

CREATE TRIGGER checkpoint_cosignatures_no_update BEFORE UPDATE ON checkpoint_cosignatures
BEGIN
    SELECT RAISE(ABORT, 'checkpoint_cosignatures is append-only');
END;

CREATE TRIGGER checkpoint_cosignatures_no_delete BEFORE DELETE ON checkpoint_cosignatures
BEGIN
    SELECT RAISE(ABORT, 'checkpoint_cosignatures is append-only');
END;

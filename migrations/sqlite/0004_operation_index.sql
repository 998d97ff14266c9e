-- The operations index: one row per governed operation, its events folded (store/operations),
-- kept by the writer in the same transaction as the events it folds. It is what
-- `GET /api/v1/operations`, the exports and `syncgate audit list --operations` page through,
-- so a filtered page is an index range scan rather than a fold of every candidate's events.
--
-- Derived, never evidence: every value here is a fold of rows in audit_events (the hashed
-- source of truth), `syncgate audit verify` checks that it still agrees with them, and it can
-- be rebuilt from them. Unlike audit_events it is updated in place (an operation's later events
-- change its decision, status, effect), so it has no append-only triggers.
--
-- Values as the summary holds them: text as recorded; `drift` 0 or 1; times as microseconds
-- since the Unix epoch (an integer key scans and sorts faster than audit_events' RFC 3339 text;
-- the same instants, since events are recorded to the microsecond); `display_name_folded` is
-- display_name with ASCII letters lower-cased (the free-text search ignores ASCII case, and
-- only ASCII, on both backends, which SQL's lower() would not guarantee).
CREATE TABLE operation_index (
    first_seq           INTEGER PRIMARY KEY,
    operation_id        TEXT NOT NULL UNIQUE,
    operation           TEXT NOT NULL,
    partner_tenant_id   TEXT,
    actor_oid           TEXT,
    actor_upn           TEXT,
    actor_appid         TEXT,
    decision            TEXT,
    rule                TEXT,
    status              INTEGER,
    effect              TEXT,
    drift               INTEGER NOT NULL,
    approval_id         TEXT,
    display_name        TEXT,
    display_name_folded TEXT,
    first_time          INTEGER NOT NULL,
    last_time           INTEGER NOT NULL,
    terminal            TEXT,
    -- Where the operation's events lie: its latest event's seq and how many it has (a page's
    -- events are then read as one range of the log when they are most of it).
    last_seq            INTEGER NOT NULL,
    events              INTEGER NOT NULL
);

-- Pages are newest first by first_seq; each filter has an index that hands its rows over in
-- that order, so a page stops after `limit` rows whichever filter leads.
CREATE INDEX operation_index_partner ON operation_index (partner_tenant_id, first_seq);
CREATE INDEX operation_index_operation ON operation_index (operation, first_seq);
CREATE INDEX operation_index_decision ON operation_index (decision, first_seq);
CREATE INDEX operation_index_rule ON operation_index (rule, first_seq);
CREATE INDEX operation_index_effect ON operation_index (effect, first_seq);
CREATE INDEX operation_index_status ON operation_index (status, first_seq);
CREATE INDEX operation_index_drift ON operation_index (drift, first_seq);
CREATE INDEX operation_index_first_time ON operation_index (first_time, first_seq);

-- The actor filter matches the oid, the UPN or the app id, ignoring ASCII case: one row per
-- distinct lower-cased identifier of the operation's actor, so the filter is one index walk in
-- first_seq order instead of three case-folded comparisons on every operation.
CREATE TABLE operation_actors (
    actor     TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    PRIMARY KEY (actor, first_seq)
) WITHOUT ROWID;

-- The last seq folded into the index. Equal to the chain head once the writer has caught up
-- (it does at open, for a log written before this migration); readers refuse an index behind
-- the log rather than answer from it.
CREATE TABLE operation_index_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq INTEGER NOT NULL
);

INSERT INTO operation_index_state (id, through_seq) VALUES (1, 0);

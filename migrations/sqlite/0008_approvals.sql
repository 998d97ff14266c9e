-- The change-approval gate (docs/approvals.md). These tables hold the gate's working state; the
-- evidence is in the chain: every request, vote, expiry and use is also an audit event
-- (approval_requested, approval_vote, approval_expired, approval_voided, and the received and
-- completed events of the change sent under an approval, which carry its id). A row changes only
-- under a version check, in the transaction that appends the event recording the change.

CREATE TABLE approvals (
    id                TEXT PRIMARY KEY,
    -- The held request's operation.
    operation_id      TEXT NOT NULL,
    -- RFC 3339 UTC with six fractional digits and 'Z' (text order is time order), as in
    -- audit_events.
    created           TEXT NOT NULL,
    -- pending, approved, rejected, expired, void, used.
    status            TEXT NOT NULL,
    -- Bumped by every change; a change names the version it was decided on.
    version           INTEGER NOT NULL,
    -- The policy the request was made under, whole (JSON).
    policy            TEXT NOT NULL,
    rule              TEXT NOT NULL,
    -- What the request is bound to.
    method            TEXT NOT NULL,
    canonical_path    TEXT NOT NULL,
    partner_tenant_id TEXT,
    requester         TEXT NOT NULL,
    requester_doc     TEXT NOT NULL,
    body_hash         TEXT NOT NULL,
    before_hash       TEXT NOT NULL,
    justification     TEXT,
    ticket            TEXT,
    vote_deadline     TEXT NOT NULL,
    send_deadline     TEXT,
    decided           TEXT,
    used_by           TEXT,
    -- What approvers look at: body, before-state, diff, the rule's message (JSON).
    change            TEXT NOT NULL
);

CREATE INDEX approvals_binding ON approvals (requester, canonical_path, method, body_hash, created);
CREATE INDEX approvals_status ON approvals (status, created);
CREATE INDEX approvals_created ON approvals (created);

-- One row per vote; a principal votes once per request (and one person, by oid, once).
CREATE TABLE approval_votes (
    approval_id TEXT NOT NULL,
    principal   TEXT NOT NULL,
    oid         TEXT NOT NULL,
    -- The voter's groups when it voted (JSON array).
    groups      TEXT NOT NULL,
    ballot      TEXT NOT NULL,
    comment     TEXT,
    time        TEXT NOT NULL,
    PRIMARY KEY (approval_id, principal),
    UNIQUE (approval_id, oid)
);

-- Notifications to webhooks, written in the transaction that records what they announce, and
-- delivered (at least once) by a task that retries with backoff: a webhook that is down loses
-- nothing and blocks nothing.
CREATE TABLE approval_outbox (
    id           TEXT PRIMARY KEY,
    created      TEXT NOT NULL,
    approval_id  TEXT NOT NULL,
    webhook      TEXT NOT NULL,
    -- The exact body POSTed (JSON).
    body         TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    next_attempt TEXT NOT NULL,
    delivered    TEXT,
    last_error   TEXT
);

-- Each webhook's queue of undelivered notices, oldest first (ids are UUIDv7, so they sort by
-- creation). Partial: delivered notices stay in the table, and the delivery task's looks (every
-- few seconds, on every replica) read only what still waits.
CREATE INDEX approval_outbox_queue ON approval_outbox (webhook, id) WHERE delivered IS NULL;

CREATE TRIGGER approval_votes_no_update BEFORE UPDATE ON approval_votes
BEGIN
    SELECT RAISE(ABORT, 'approval_votes is append-only');
END;

CREATE TRIGGER approval_votes_no_delete BEFORE DELETE ON approval_votes
BEGIN
    SELECT RAISE(ABORT, 'approval_votes is append-only');
END;

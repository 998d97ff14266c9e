-- Indexes for the auditors' operations query (store/operations, `GET /api/v1/operations`,
-- `syncgate audit list --operations`), chosen by `cargo bench --bench audit_queries` on a log
-- of a million events. Indexes only, no new column: see store/operations/mod.rs for why.
--
-- Pages are newest first by seq. With a partner filter a planner may otherwise walk
-- (partner_tenant_id, time) and sorts every event of that partner to find the newest hundred;
-- this one hands them over in seq order, so a page stops after about a hundred rows.
CREATE INDEX audit_events_partner_seq ON audit_events (partner_tenant_id, seq);

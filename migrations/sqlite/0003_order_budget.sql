-- The weekly order budget (crates/acme/src/budget.rs) charges each certificate to a tenant: the
-- user who holds the name's reservation or bound it; NULL for the broker's own names (the
-- wildcard). Kept on the row so renewals and retries after a restart charge the same tenant;
-- each issuance's `cert.issue` audit event carries it too (`user_id`).
ALTER TABLE certificates ADD COLUMN owner_id BIGINT;

-- The budget is derived from the past week's `cert.issue` events, read before first orders;
-- the audit log grows with every tunnel bind, so finding them needs an index.
CREATE INDEX audit_events_action_at ON audit_events(action, at);

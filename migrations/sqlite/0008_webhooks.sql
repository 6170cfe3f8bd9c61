-- Webhooks: where tunnel alerts (and, for the operator's global hooks, certificate and DNS
-- alerts) are POSTed. user_id NULL is a global hook. secret signs every delivery
-- (HMAC-SHA256); it is shown once at creation and kept here in the clear because signing
-- needs it (a hash could not sign).
CREATE TABLE webhooks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    BIGINT  REFERENCES users(id) ON DELETE CASCADE,
    url        TEXT    NOT NULL,
    secret     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);
CREATE INDEX webhooks_user ON webhooks(user_id);

-- One event to one webhook: the queue of the delivery task and its log at once, so a restart
-- resumes pending deliveries. state: 'pending' (next_attempt_ms says when), 'delivered' or
-- 'failed' (given up). Finished rows are pruned (newest kept per webhook).
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      BIGINT  NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event           TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending',
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    next_attempt_ms BIGINT  NOT NULL,
    last_attempt    BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    delivered_at    BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_ms);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, id);

-- Accounts for the API and console (crates/tenants, crates/api).

-- An argon2id PHC string; NULL until the user (or the operator) sets one: such a user can use
-- SSH and API tokens but cannot sign in to the console.
ALTER TABLE users ADD COLUMN password_hash TEXT;
-- Per-user quotas set by an admin; NULL means the broker's configured default.
ALTER TABLE users ADD COLUMN max_reservations BIGINT;
ALTER TABLE users ADD COLUMN max_tunnels BIGINT;
ALTER TABLE users ADD COLUMN max_visitor_connections BIGINT;

-- What a reserved name serves: 'http' (-R NAME:80), 'tls' (passthrough, -R NAME:443) or 'tcp'
-- (the name is tcp:PORT, -R tcp:PORT).
ALTER TABLE reservations ADD COLUMN kind TEXT NOT NULL DEFAULT 'http';

-- API tokens: only the SHA-256 of the token is kept (tokens are 190 random bits, so a fast hash
-- is enough; argon2 is for passwords people choose). `hint` is the first characters, for
-- display. Revoking deletes the row; the audit log keeps the history.
CREATE TABLE api_tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    hash         TEXT    NOT NULL UNIQUE,
    hint         TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    created_at   BIGINT  NOT NULL,
    UNIQUE (user_id, name)
);

-- Console sign-ins. The session cookie (a JWT) names its row; logging out deletes it, so a
-- stolen cookie dies with the session even before it expires.
CREATE TABLE login_sessions (
    id          TEXT    PRIMARY KEY,
    user_id     BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX login_sessions_user ON login_sessions(user_id);

-- HMAC keys that sign session JWTs, shared by every node on this database. The newest signs;
-- a retired key still verifies until the sessions it signed have expired.
CREATE TABLE signing_keys (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    secret      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    retired_at  BIGINT
);

-- One-time links for the first admin's password (printed by `broker serve`); SHA-256 only.
CREATE TABLE setup_tokens (
    hash        TEXT    PRIMARY KEY,
    expires_at  BIGINT  NOT NULL,
    used_at     BIGINT
);

-- The audit log is read per user, newest first, by the API.
CREATE INDEX audit_events_user ON audit_events(user_id, id);

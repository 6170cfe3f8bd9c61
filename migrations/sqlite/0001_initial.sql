-- Users own keys and names; a disabled user keeps their data but cannot connect.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    is_admin    BOOLEAN NOT NULL DEFAULT FALSE,
    disabled    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL
);

-- An SSH public key decides the tenant; the fingerprint (SHA256:...) is the lookup key at auth time.
CREATE TABLE ssh_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    fingerprint TEXT    NOT NULL UNIQUE,
    algorithm   TEXT    NOT NULL,
    public_key  TEXT    NOT NULL,
    comment     TEXT    NOT NULL DEFAULT '',
    created_at  BIGINT  NOT NULL
);
CREATE INDEX ssh_keys_user ON ssh_keys(user_id);

-- A reserved subdomain label; unique across all tenants.
CREATE TABLE reservations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    user_id     BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX reservations_user ON reservations(user_id);

-- Append-only log of every mutation; the running server tails it to apply admin changes live.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT  NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    user_id     BIGINT,
    detail      TEXT    NOT NULL DEFAULT ''
);

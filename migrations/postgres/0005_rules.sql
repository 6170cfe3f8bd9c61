-- Access rules per reservation, enforced by the edge (crates/edge/src/access.rs). Every row
-- hangs off a reservation and goes with it: a released name's rules are never inherited by the
-- next holder.

-- Basic-auth users: an argon2id PHC string, or a bcrypt line ($2y$/$2a$/$2b$) imported from an
-- htpasswd file as it was.
CREATE TABLE basic_users (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reservation_id BIGINT  NOT NULL REFERENCES reservations(id) ON DELETE CASCADE,
    username       TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    UNIQUE (reservation_id, username)
);

-- IP allow and deny entries (CIDRs, v4 or v6, stored in canonical form); one action per CIDR.
CREATE TABLE ip_rules (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reservation_id BIGINT  NOT NULL REFERENCES reservations(id) ON DELETE CASCADE,
    action         TEXT    NOT NULL,
    cidr           TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    UNIQUE (reservation_id, cidr)
);

-- Share links: only the SHA-256 of the link's random token is kept. uses_left NULL means
-- unlimited; redeeming decrements it in one statement.
CREATE TABLE share_links (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reservation_id BIGINT  NOT NULL REFERENCES reservations(id) ON DELETE CASCADE,
    token_hash     TEXT    NOT NULL UNIQUE,
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL,
    uses_left      BIGINT,
    revoked        BOOLEAN NOT NULL DEFAULT FALSE,
    created_by     TEXT    NOT NULL
);
CREATE INDEX share_links_reservation ON share_links(reservation_id);

-- The HMAC key of share cookies, shared by every node on this database: one row, id 1, written
-- with ON CONFLICT DO NOTHING, so two nodes starting at once still agree.
CREATE TABLE share_keys (
    id             BIGINT  PRIMARY KEY,
    secret         TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL
);

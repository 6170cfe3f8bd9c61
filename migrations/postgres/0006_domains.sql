-- Custom domains: a tenant's own host name (app.their-domain.org) served by one of their
-- reservations once DNS proves it (crates/domains). A row goes with its reservation.
--
-- state: 'pending' (never proven, not served), 'verified' (proven at the last check) or
-- 'failing' (proven once, not at the last check; served for domain_grace_secs from
-- failing_since). token: the value the TXT record _warren-challenge.HOST must hold.
CREATE TABLE custom_domains (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hostname       TEXT    NOT NULL,
    reservation_id BIGINT  NOT NULL REFERENCES reservations(id) ON DELETE CASCADE,
    token          TEXT    NOT NULL,
    state          TEXT    NOT NULL DEFAULT 'pending',
    created_at     BIGINT  NOT NULL,
    verified_at    BIGINT,
    last_checked   BIGINT,
    last_error     TEXT,
    failing_since  BIGINT,
    UNIQUE (hostname, reservation_id)
);
CREATE INDEX custom_domains_reservation ON custom_domains(reservation_id);
-- One holder per host name once proven: several tenants may have it pending (an attach
-- proves nothing, so it must not lock the rightful owner out), but only the one whose token
-- DNS shows becomes verified, and nobody else can while it holds the name.
CREATE UNIQUE INDEX custom_domains_held ON custom_domains(hostname) WHERE state <> 'pending';

-- One ACME client for the whole cluster (warren-acme): the node holding the advisory lock
-- orders and renews; every node serves what it stores. The answers to HTTP-01 and TLS-ALPN-01
-- challenges are kept here while an order runs, because the CA may reach any node: each node
-- LISTENs on warren_challenges and answers from its copy.
CREATE TABLE acme_challenges (
    kind   TEXT NOT NULL,   -- http-01: key = token; tls-alpn-01: key = domain
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,   -- the key authorization, or its SHA-256 digest in hex
    PRIMARY KEY (kind, key)
);
CREATE FUNCTION warren_challenges_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('warren_challenges', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER challenges_notify AFTER INSERT OR UPDATE OR DELETE ON acme_challenges
    FOR EACH STATEMENT EXECUTE FUNCTION warren_challenges_notify();

-- Secrets every node of a cluster must hold alike, made by the first node that needs one:
-- `cert_key` seals the certificates' private keys in this database.
CREATE TABLE cluster_secrets (
    name       TEXT   PRIMARY KEY,
    value      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

-- Kept in step with Postgres (see its 0012); one node on SQLite keeps its challenges in memory.
CREATE TABLE acme_challenges (
    kind   TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE cluster_secrets (
    name       TEXT   PRIMARY KEY,
    value      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

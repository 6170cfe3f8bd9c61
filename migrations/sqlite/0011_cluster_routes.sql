-- Kept in step with Postgres (see its 0011): a SQLite file serves one node, which writes no
-- holds and forwards to no peer, so only the columns and the table exist here.
ALTER TABLE holds ADD COLUMN kind TEXT NOT NULL DEFAULT 'http';
ALTER TABLE holds ADD COLUMN sticky TEXT;
ALTER TABLE holds ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
CREATE TABLE cluster_ca (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    cert_pem   TEXT    NOT NULL,
    key_pem    TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);

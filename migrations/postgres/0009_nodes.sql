-- Brokers sharing this database (warren-cluster). Times are Unix milliseconds from the
-- DATABASE's clock, never a node's, so nodes with skewed clocks still agree on who is alive: a
-- node is alive while heartbeat_at + lease_ms is ahead of the database's now. incarnation is
-- random per process start: a node only refreshes or removes the row it wrote itself. host and
-- pid let a restart on the same machine tell its own stale row (the process is gone) from a
-- second broker that is still running.
CREATE TABLE nodes (
    name         TEXT    PRIMARY KEY,
    incarnation  BIGINT  NOT NULL,
    public_addr  TEXT    NOT NULL,
    cluster_addr TEXT,
    host         TEXT    NOT NULL,
    pid          BIGINT  NOT NULL,
    lease_ms     BIGINT  NOT NULL,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL,
    tunnels      BIGINT  NOT NULL DEFAULT 0
);

-- Which node's session serves a tunnel name: one row per name, so a claim is one atomic
-- INSERT … ON CONFLICT DO UPDATE … WHERE (the holder's node is dead, or is the claimer).
-- Rows of a node that leaves go with it; a dead node's rows stay until taken over or reaped.
CREATE TABLE holds (
    name    TEXT    PRIMARY KEY,
    node    TEXT    NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
    session BIGINT  NOT NULL,
    user_id BIGINT  NOT NULL,
    since   BIGINT  NOT NULL
);
CREATE INDEX holds_node ON holds(node);

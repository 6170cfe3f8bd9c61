-- A user's own cap on bytes per second each way per tunnel (quota max_tunnel_bytes_per_sec);
-- NULL: the broker's configured max_tunnel_bytes_per_sec; 0: no limit.
ALTER TABLE users ADD COLUMN max_tunnel_bytes_per_sec BIGINT;

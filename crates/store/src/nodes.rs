//! Brokers sharing one database, and which node holds each live tunnel name (see
//! `warren-cluster` for how they are used).
//!
//! Every time here is read from the database's clock (`NOW` below differs per backend), never a
//! node's, so a node whose clock is off cannot keep a dead peer alive or kill a live one. A node
//! is alive while `heartbeat_at + lease_ms` is ahead of that clock. A claim is one statement
//! (`INSERT … ON CONFLICT DO UPDATE … WHERE`), atomic on both backends: two nodes claiming one
//! name at once cannot both win, whatever they checked before.

use crate::Result;

/// A node as stored, with the database's clock at the moment it was read.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeRow {
    /// Unique name (`node_name`).
    pub name: String,
    /// Random per process start: only the process that wrote the row refreshes or removes it.
    pub incarnation: i64,
    /// Where owners and visitors reach it (its SSH listener, as configured or bound).
    pub public_addr: String,
    /// Where the other nodes reach it (`cluster_addr`), if said.
    pub cluster_addr: Option<String>,
    /// The machine it runs on.
    pub host: String,
    /// Its process id on that machine.
    pub pid: i64,
    /// How long it may miss heartbeats before it counts as dead (ms).
    pub lease_ms: i64,
    /// When it joined (Unix ms, database clock).
    pub started_at: i64,
    /// Its last heartbeat (Unix ms, database clock).
    pub heartbeat_at: i64,
    /// Live tunnels it serves, as of its last heartbeat.
    pub tunnels: i64,
    /// The database's clock when this row was read (Unix ms).
    pub now_ms: i64,
}

impl NodeRow {
    /// Whether its heartbeat is within its lease.
    pub fn alive(&self) -> bool {
        self.heartbeat_at + self.lease_ms > self.now_ms
    }

    /// Milliseconds since its last heartbeat.
    pub fn silent_ms(&self) -> i64 {
        (self.now_ms - self.heartbeat_at).max(0)
    }
}

/// A node about to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNode {
    /// Unique name.
    pub name: String,
    /// Random per process start.
    pub incarnation: i64,
    /// Where owners and visitors reach it.
    pub public_addr: String,
    /// Where the other nodes reach it.
    pub cluster_addr: Option<String>,
    /// The machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: i64,
    /// Its lease (ms).
    pub lease_ms: i64,
}

/// What [`NodeStore::join_node`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// The node's row is written (any stale row of the same name, and its holds, replaced).
    Joined(NodeRow),
    /// A live node stands in the way: one of the same name, or with `exclusive`, any other.
    Blocked(NodeRow),
}

/// Which node's session holds a tunnel name.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Hold {
    /// The tunnel name (`app`, `tcp:20001`).
    pub name: String,
    /// The holding node.
    pub node: String,
    /// The session on that node.
    pub session: i64,
    /// Whose tunnel it is.
    pub user_id: i64,
    /// Since when (Unix ms, database clock).
    pub since: i64,
    /// `http`, `tls` or `tcp`.
    pub kind: String,
    /// A random forward's identity (key, bind address, position), so the same forward gets
    /// the same name back on any node; `None` for names asked for.
    pub sticky: Option<String>,
}

/// A hold with what another node needs to reach it: the holder's cluster address and whether
/// it is alive, by the database's clock.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HoldRoute {
    /// The tunnel name.
    pub name: String,
    /// The holding node.
    pub node: String,
    /// Whose tunnel it is.
    pub user_id: i64,
    /// `http`, `tls` or `tcp`.
    pub kind: String,
    /// Where the other nodes reach the holder (`cluster_addr`), if it has one.
    pub cluster_addr: Option<String>,
    /// Whether the holder's heartbeat is within its lease.
    pub alive: bool,
}

/// What a claim records beside the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    /// The claiming node.
    pub node: &'a str,
    /// The session on it.
    pub session: i64,
    /// Whose tunnel it is.
    pub user_id: i64,
    /// `http`, `tls` or `tcp`.
    pub kind: &'a str,
    /// A random forward's identity, for cluster-wide stickiness.
    pub sticky: Option<&'a str>,
}

/// Changes to holds as another node made them: the name of each, as they commit.
#[async_trait::async_trait]
pub trait HoldEvents: Send {
    /// The next changed name; `None` when changes may have been missed (the connection was
    /// lost, or this reader fell behind: the caller reconciles); an error when notifications
    /// have ended.
    async fn next(&mut self) -> Result<Option<String>>;
}

/// Node membership and name holds.
#[async_trait::async_trait]
pub trait NodeStore: Send + Sync + 'static {
    /// Whether several nodes may share this database: Postgres yes; a SQLite file is one
    /// machine's, and serves one node at a time.
    fn shared(&self) -> bool;
    /// Writes `node`'s row, in one transaction with the check that no live node blocks it: one
    /// of the same name, or (`exclusive`) any other.
    async fn join_node(&self, node: &NewNode, exclusive: bool) -> Result<Join>;
    /// Removes a node's row and its holds, if the row is still `incarnation`'s: a clean leave,
    /// or a stale row whose process is gone. Returns whether a row went.
    async fn forget_node(&self, name: &str, incarnation: i64) -> Result<bool>;
    /// Refreshes a node's heartbeat and tunnel count; `false` when its row is gone or belongs
    /// to another incarnation (it was taken over: this process no longer counts as a node).
    async fn heartbeat(&self, name: &str, incarnation: i64, tunnels: i64) -> Result<bool>;
    /// Every node, by name, alive or not.
    async fn list_nodes(&self) -> Result<Vec<NodeRow>>;
    /// Removes nodes silent for more than `silent_ms`, with their holds.
    async fn reap_nodes(&self, silent_ms: i64) -> Result<u64>;
    /// Claims `name` for `session` on `node`: `Ok(None)` when it is now theirs (it was free,
    /// held by a dead node, by the same user (a newer session takes a name over, as on one
    /// node), or on `node` itself, whose registry decides between its own sessions), else the
    /// live hold that stands in the way.
    async fn claim_hold(&self, name: &str, claim: &Claim<'_>) -> Result<Option<Hold>>;
    /// Releases `name` if `session` on `node` still holds it; returns whether it did.
    async fn release_hold(&self, name: &str, node: &str, session: i64) -> Result<bool>;
    /// Every hold, by name.
    async fn list_holds(&self) -> Result<Vec<Hold>>;
    /// Every hold with its node's address and liveness.
    async fn hold_routes(&self) -> Result<Vec<HoldRoute>>;
    /// The holds of these names (those that exist), with their nodes' addresses and liveness:
    /// one query for a burst of changes.
    async fn hold_routes_of(&self, names: &[String]) -> Result<Vec<HoldRoute>>;
    /// (rows, highest change number): differs from an earlier reading whenever any hold was
    /// written or removed since, so a node can tell without reading them all.
    async fn holds_version(&self) -> Result<(i64, i64)>;
    /// The holds of random forwards with this identity, on any node (a reconnect loop may
    /// have left a short-lived one beside the one that matters), oldest first.
    async fn sticky_holds(&self, sticky: &str) -> Result<Vec<Hold>>;
    /// The cluster CA as (certificate, key) PEM, storing `generated` first if there is none
    /// yet: every node gets the one the first of them stored.
    async fn cluster_ca(&self, generated: (&str, &str)) -> Result<(String, String)>;
    /// Holds as other nodes change them (Postgres `LISTEN`); `None` on a backend without
    /// notifications (SQLite: one node, nothing to hear).
    async fn hold_events(&self) -> Result<Option<Box<dyn HoldEvents>>>;
    /// The cluster-wide secret `name`, storing `generated` first if there is none yet.
    async fn cluster_secret(&self, name: &str, generated: &str) -> Result<String>;
    /// Tries to become the one node doing `job` (a Postgres advisory lock, held by a connection
    /// of its own for as long as the returned lease lives); `None` while another node holds
    /// it. A database serving one node always says yes.
    async fn lead(&self, job: Job) -> Result<Option<Box<dyn Lease>>>;
    /// Publishes a challenge answer for the other nodes (`kind`: `http-01` or `tls-alpn-01`).
    async fn put_challenge(&self, kind: &str, key: &str, value: &str) -> Result<()>;
    /// Withdraws one.
    async fn take_challenge(&self, kind: &str, key: &str) -> Result<()>;
    /// Every published answer: (kind, key, value).
    async fn list_challenges(&self) -> Result<Vec<(String, String, String)>>;
    /// A wake-up each time the published answers change (Postgres `LISTEN`); `None` on SQLite.
    async fn challenge_events(&self) -> Result<Option<Box<dyn HoldEvents>>>;
    /// How many connections the database lets users without superuser rights open at once
    /// (`max_connections` less the reserved ones); `None` where there is no such limit (SQLite).
    async fn connection_limit(&self) -> Result<Option<i64>>;
}

/// Work one node of a cluster does for all ([`NodeStore::lead`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Ordering and renewing certificates, and driving a remote DNS provider.
    Acme,
}

impl Job {
    /// The advisory lock's key: fixed, so every node contends for the same one.
    fn lock_key(self) -> i64 {
        match self {
            // "warren" in ASCII, then the job.
            Job::Acme => 0x7761_7272_656e_0001,
        }
    }
}

/// A held [`Job`]: dropping it lets go.
#[async_trait::async_trait]
pub trait Lease: Send {
    /// Whether it is still held (the connection holding the lock still answers).
    async fn held(&mut self) -> bool;
}

/// A hold's columns, as [`Hold`] reads them (a macro: sqlx takes only literal SQL).
macro_rules! hold_columns {
    () => {
        "name, node, session, user_id, since, kind, sticky"
    };
}

/// A hold with its node's address and liveness, as [`HoldRoute`] reads it; `$now` is the
/// backend's clock.
macro_rules! hold_route_sql {
    ($now:literal) => {
        concat!(
            "SELECT h.name, h.node, h.user_id, h.kind, n.cluster_addr, ",
            "(n.heartbeat_at + n.lease_ms > ",
            $now,
            ") AS alive FROM holds h JOIN nodes n ON n.name = h.node "
        )
    };
}

/// The SQL, with the backend's clock expression spliced in as `$now`.
macro_rules! node_sql {
    ($now:literal) => {
        concat!(
            "SELECT name, incarnation, public_addr, cluster_addr, host, pid, lease_ms, ",
            "started_at, heartbeat_at, tunnels, ",
            $now,
            " AS now_ms FROM nodes "
        )
    };
}

macro_rules! impl_nodes {
    ($ty:ty, $begin:literal, $shared:literal, $now:literal, $seq:literal, $names_in:literal) => {
        #[async_trait::async_trait]
        impl NodeStore for $ty {
            fn shared(&self) -> bool {
                $shared
            }

            async fn join_node(&self, node: &NewNode, exclusive: bool) -> Result<Join> {
                let mut tx = self.writer.begin_with($begin).await?;
                let blocker = sqlx::query_as::<_, NodeRow>(concat!(
                    node_sql!($now),
                    "WHERE (name = $1 OR $2) AND heartbeat_at + lease_ms > ",
                    $now,
                    " ORDER BY name = $1 DESC, name LIMIT 1"
                ))
                .bind(&node.name)
                .bind(exclusive)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = blocker {
                    return Ok(Join::Blocked(row));
                }
                sqlx::query("DELETE FROM nodes WHERE name = $1")
                    .bind(&node.name)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query_as::<_, NodeRow>(concat!(
                    "INSERT INTO nodes (name, incarnation, public_addr, cluster_addr, host, pid, ",
                    "lease_ms, started_at, heartbeat_at, tunnels) VALUES ($1, $2, $3, $4, $5, $6, $7, ",
                    $now, ", ", $now, ", 0) RETURNING name, incarnation, public_addr, cluster_addr, ",
                    "host, pid, lease_ms, started_at, heartbeat_at, tunnels, heartbeat_at AS now_ms"
                ))
                .bind(&node.name)
                .bind(node.incarnation)
                .bind(&node.public_addr)
                .bind(&node.cluster_addr)
                .bind(&node.host)
                .bind(node.pid)
                .bind(node.lease_ms)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Join::Joined(row))
            }

            async fn forget_node(&self, name: &str, incarnation: i64) -> Result<bool> {
                let mut tx = self.writer.begin_with($begin).await?;
                // Holds first: SQLite enforces the cascade only with foreign keys on, which
                // another tool opening the file may not have set.
                sqlx::query(
                    "DELETE FROM holds WHERE node = $1 AND EXISTS \
                     (SELECT 1 FROM nodes WHERE name = $1 AND incarnation = $2)",
                )
                .bind(name)
                .bind(incarnation)
                .execute(&mut *tx)
                .await?;
                let gone = sqlx::query("DELETE FROM nodes WHERE name = $1 AND incarnation = $2")
                    .bind(name)
                    .bind(incarnation)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(gone > 0)
            }

            async fn heartbeat(&self, name: &str, incarnation: i64, tunnels: i64) -> Result<bool> {
                let done = sqlx::query(concat!(
                    "UPDATE nodes SET heartbeat_at = ",
                    $now,
                    ", tunnels = $3 WHERE name = $1 AND incarnation = $2"
                ))
                .bind(name)
                .bind(incarnation)
                .bind(tunnels)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_nodes(&self) -> Result<Vec<NodeRow>> {
                Ok(sqlx::query_as::<_, NodeRow>(concat!(node_sql!($now), "ORDER BY name"))
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn reap_nodes(&self, silent_ms: i64) -> Result<u64> {
                let mut tx = self.writer.begin_with($begin).await?;
                sqlx::query(concat!(
                    "DELETE FROM holds WHERE node IN (SELECT name FROM nodes WHERE heartbeat_at + $1 < ",
                    $now,
                    ")"
                ))
                .bind(silent_ms)
                .execute(&mut *tx)
                .await?;
                let gone = sqlx::query(concat!("DELETE FROM nodes WHERE heartbeat_at + $1 < ", $now))
                    .bind(silent_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(gone)
            }

            async fn claim_hold(&self, name: &str, claim: &Claim<'_>) -> Result<Option<Hold>> {
                // The holder read after a refused claim may have let go in between: claim again.
                for _ in 0..3 {
                    let won = sqlx::query_as::<_, (String,)>(concat!(
                        "INSERT INTO holds (name, node, session, user_id, since, kind, sticky) ",
                        "VALUES ($1, $2, $3, $4, ",
                        $now,
                        ", $5, $6) ON CONFLICT (name) DO UPDATE SET node = excluded.node, ",
                        "session = excluded.session, user_id = excluded.user_id, since = excluded.since, ",
                        "kind = excluded.kind, sticky = excluded.sticky, seq = ",
                        $seq,
                        // This node's (its registry decides), the same owner's (a newer
                        // session takes a name over, as on one node), or a dead node's.
                        " WHERE holds.node = excluded.node OR holds.user_id = excluded.user_id ",
                        "OR NOT EXISTS (SELECT 1 FROM nodes n ",
                        "WHERE n.name = holds.node AND n.heartbeat_at + n.lease_ms > ",
                        $now,
                        ") RETURNING node"
                    ))
                    .bind(name)
                    .bind(claim.node)
                    .bind(claim.session)
                    .bind(claim.user_id)
                    .bind(claim.kind)
                    .bind(claim.sticky)
                    .fetch_optional(&self.writer)
                    .await?;
                    if won.is_some() {
                        return Ok(None);
                    }
                    let holder = sqlx::query_as::<_, Hold>(concat!(
                        "SELECT ",
                        hold_columns!(),
                        " FROM holds WHERE name = $1"
                    ))
                    .bind(name)
                    .fetch_optional(&self.writer)
                    .await?;
                    if holder.is_some() {
                        return Ok(holder);
                    }
                }
                Err(sqlx::Error::Protocol(format!("the hold of {name:?} keeps changing hands")).into())
            }

            async fn release_hold(&self, name: &str, node: &str, session: i64) -> Result<bool> {
                let done = sqlx::query("DELETE FROM holds WHERE name = $1 AND node = $2 AND session = $3")
                    .bind(name)
                    .bind(node)
                    .bind(session)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_holds(&self) -> Result<Vec<Hold>> {
                Ok(sqlx::query_as::<_, Hold>(concat!(
                    "SELECT ",
                    hold_columns!(),
                    " FROM holds ORDER BY name"
                ))
                .fetch_all(&self.pool)
                .await?)
            }

            async fn hold_routes(&self) -> Result<Vec<HoldRoute>> {
                Ok(sqlx::query_as::<_, HoldRoute>(concat!(
                    hold_route_sql!($now),
                    "ORDER BY h.name"
                ))
                .fetch_all(&self.pool)
                .await?)
            }

            async fn hold_routes_of(&self, names: &[String]) -> Result<Vec<HoldRoute>> {
                let names = serde_json::to_string(names)
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                Ok(sqlx::query_as::<_, HoldRoute>(concat!(
                    hold_route_sql!($now),
                    "WHERE h.name IN ",
                    $names_in,
                    " ORDER BY h.name"
                ))
                .bind(names)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn holds_version(&self) -> Result<(i64, i64)> {
                Ok(sqlx::query_as::<_, (i64, i64)>(
                    "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM holds",
                )
                .fetch_one(&self.pool)
                .await?)
            }

            async fn sticky_holds(&self, sticky: &str) -> Result<Vec<Hold>> {
                Ok(sqlx::query_as::<_, Hold>(concat!(
                    "SELECT ",
                    hold_columns!(),
                    " FROM holds WHERE sticky = $1 ORDER BY since, name LIMIT 16"
                ))
                .bind(sticky)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn cluster_ca(&self, generated: (&str, &str)) -> Result<(String, String)> {
                sqlx::query(concat!(
                    "INSERT INTO cluster_ca (id, cert_pem, key_pem, created_at) VALUES (1, $1, $2, ",
                    $now,
                    ") ON CONFLICT (id) DO NOTHING"
                ))
                .bind(generated.0)
                .bind(generated.1)
                .execute(&self.writer)
                .await?;
                Ok(sqlx::query_as::<_, (String, String)>(
                    "SELECT cert_pem, key_pem FROM cluster_ca WHERE id = 1",
                )
                .fetch_one(&self.writer)
                .await?)
            }

            async fn hold_events(&self) -> Result<Option<Box<dyn HoldEvents>>> {
                self.listen(HOLDS_CHANNEL).await
            }

            async fn cluster_secret(&self, name: &str, generated: &str) -> Result<String> {
                sqlx::query(concat!(
                    "INSERT INTO cluster_secrets (name, value, created_at) VALUES ($1, $2, ",
                    $now,
                    ") ON CONFLICT (name) DO NOTHING"
                ))
                .bind(name)
                .bind(generated)
                .execute(&self.writer)
                .await?;
                Ok(sqlx::query_as::<_, (String,)>("SELECT value FROM cluster_secrets WHERE name = $1")
                    .bind(name)
                    .fetch_one(&self.writer)
                    .await?
                    .0)
            }

            async fn lead(&self, job: Job) -> Result<Option<Box<dyn Lease>>> {
                self.lead_job(job).await
            }

            async fn put_challenge(&self, kind: &str, key: &str, value: &str) -> Result<()> {
                sqlx::query(
                    "INSERT INTO acme_challenges (kind, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
                )
                .bind(kind)
                .bind(key)
                .bind(value)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn take_challenge(&self, kind: &str, key: &str) -> Result<()> {
                sqlx::query("DELETE FROM acme_challenges WHERE kind = $1 AND key = $2")
                    .bind(kind)
                    .bind(key)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn list_challenges(&self) -> Result<Vec<(String, String, String)>> {
                Ok(sqlx::query_as::<_, (String, String, String)>(
                    "SELECT kind, key, value FROM acme_challenges ORDER BY kind, key",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn challenge_events(&self) -> Result<Option<Box<dyn HoldEvents>>> {
                self.listen(CHALLENGES_CHANNEL).await
            }

            async fn connection_limit(&self) -> Result<Option<i64>> {
                self.connection_limit_of().await
            }
        }
    };
}

impl crate::backend::SqliteStore {
    async fn listen(&self, _channel: &str) -> Result<Option<Box<dyn HoldEvents>>> {
        Ok(None)
    }

    async fn lead_job(&self, _job: Job) -> Result<Option<Box<dyn Lease>>> {
        Ok(Some(Box::new(Alone)))
    }

    async fn connection_limit_of(&self) -> Result<Option<i64>> {
        Ok(None)
    }
}

impl crate::backend::PostgresStore {
    async fn listen(&self, channel: &str) -> Result<Option<Box<dyn HoldEvents>>> {
        Ok(Some(self.notices.subscribe(&self.pool, channel).await?))
    }

    async fn lead_job(&self, job: Job) -> Result<Option<Box<dyn Lease>>> {
        // A connection of its own, out of the pool: the lock lives as long as it does, and
        // dies with it when this process does.
        let mut conn = self.pool.acquire().await?.detach();
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(job.lock_key())
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then(|| Box::new(PgLease(conn)) as Box<dyn Lease>))
    }

    async fn connection_limit_of(&self) -> Result<Option<i64>> {
        // `reserved_connections` (Postgres 16 and later) is missing, so NULL, before.
        let (limit,): (i64,) = sqlx::query_as(
            "SELECT (current_setting('max_connections')::int \
             - current_setting('superuser_reserved_connections')::int \
             - COALESCE(current_setting('reserved_connections', true)::int, 0))::bigint",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(limit))
    }
}

/// The channel the `holds_notify` trigger (migration 0011) notifies on.
pub(crate) const HOLDS_CHANNEL: &str = "warren_holds";
/// The channel the `challenges_notify` trigger (migration 0012) notifies on.
pub(crate) const CHALLENGES_CHANNEL: &str = "warren_challenges";

/// The lease of the only node there is.
struct Alone;

#[async_trait::async_trait]
impl Lease for Alone {
    async fn held(&mut self) -> bool {
        true
    }
}

struct PgLease(sqlx::PgConnection);

#[async_trait::async_trait]
impl Lease for PgLease {
    async fn held(&mut self) -> bool {
        sqlx::query("SELECT 1").execute(&mut self.0).await.is_ok()
    }
}

use crate::backend::{PostgresStore, SqliteStore};

// SQLite's julianday('now') has millisecond precision and is fixed within one statement.
impl_nodes!(
    SqliteStore,
    "BEGIN IMMEDIATE",
    false,
    "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    "0",
    "(SELECT value FROM json_each($1))"
);
// clock_timestamp(), not now(): now() is the transaction's start, and a heartbeat must say when
// it was written.
impl_nodes!(
    PostgresStore,
    "BEGIN",
    true,
    "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
    "nextval('holds_seq')",
    "(SELECT jsonb_array_elements_text($1::jsonb))"
);

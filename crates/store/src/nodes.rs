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
    /// held by a dead node, or held on `node` itself, whose registry decides between its own
    /// sessions), else the live hold that stands in the way.
    async fn claim_hold(
        &self,
        name: &str,
        node: &str,
        session: i64,
        user_id: i64,
    ) -> Result<Option<Hold>>;
    /// Releases `name` if `session` on `node` still holds it; returns whether it did.
    async fn release_hold(&self, name: &str, node: &str, session: i64) -> Result<bool>;
    /// Every hold, by name.
    async fn list_holds(&self) -> Result<Vec<Hold>>;
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
    ($ty:ty, $begin:literal, $shared:literal, $now:literal) => {
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

            async fn claim_hold(
                &self,
                name: &str,
                node: &str,
                session: i64,
                user_id: i64,
            ) -> Result<Option<Hold>> {
                // The holder read after a refused claim may have let go in between: claim again.
                for _ in 0..3 {
                    let won = sqlx::query_as::<_, (String,)>(concat!(
                        "INSERT INTO holds (name, node, session, user_id, since) VALUES ($1, $2, $3, $4, ",
                        $now,
                        ") ON CONFLICT (name) DO UPDATE SET node = excluded.node, ",
                        "session = excluded.session, user_id = excluded.user_id, since = excluded.since ",
                        "WHERE holds.node = excluded.node OR NOT EXISTS (SELECT 1 FROM nodes n ",
                        "WHERE n.name = holds.node AND n.heartbeat_at + n.lease_ms > ",
                        $now,
                        ") RETURNING node"
                    ))
                    .bind(name)
                    .bind(node)
                    .bind(session)
                    .bind(user_id)
                    .fetch_optional(&self.writer)
                    .await?;
                    if won.is_some() {
                        return Ok(None);
                    }
                    let holder = sqlx::query_as::<_, Hold>(
                        "SELECT name, node, session, user_id, since FROM holds WHERE name = $1",
                    )
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
                Ok(sqlx::query_as::<_, Hold>(
                    "SELECT name, node, session, user_id, since FROM holds ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}

use crate::backend::{PostgresStore, SqliteStore};

// SQLite's julianday('now') has millisecond precision and is fixed within one statement.
impl_nodes!(
    SqliteStore,
    "BEGIN IMMEDIATE",
    false,
    "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
);
// clock_timestamp(), not now(): now() is the transaction's start, and a heartbeat must say when
// it was written.
impl_nodes!(
    PostgresStore,
    "BEGIN",
    true,
    "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
);

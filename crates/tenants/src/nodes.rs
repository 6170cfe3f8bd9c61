//! The brokers sharing this database (`broker nodes`, `GET /api/v1/nodes`): operators' facts,
//! admins only.

use serde::Serialize;
use utoipa::ToSchema;

use crate::{Caller, Result, Scope, Tenants};

/// One broker node, as the database last heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct NodeView {
    /// Its `node_name`.
    pub name: String,
    /// Where owners reach it (its SSH listener).
    pub public_addr: String,
    /// Where the other nodes reach it (`cluster_addr`), if it said.
    pub cluster_addr: Option<String>,
    /// The machine and process id it runs as.
    pub host: String,
    /// Its process id there.
    pub pid: i64,
    /// When it joined (Unix milliseconds, the database's clock).
    pub started_at_ms: i64,
    /// Its last heartbeat (Unix milliseconds, the database's clock).
    pub heartbeat_at_ms: i64,
    /// Milliseconds since that heartbeat.
    pub silent_ms: i64,
    /// How long it may stay silent before it counts as dead (ms).
    pub lease_ms: i64,
    /// Whether its last heartbeat is within its lease. A dead node's names may be taken on the
    /// others.
    pub alive: bool,
    /// Live tunnels it served at its last heartbeat.
    pub tunnels: i64,
}

impl Tenants {
    /// Every node on the database, alive or not, by name (admin).
    pub async fn nodes(&self, caller: &Caller) -> Result<Vec<NodeView>> {
        caller.require(Scope::Admin)?;
        Ok(self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| NodeView {
                alive: n.alive(),
                silent_ms: n.silent_ms(),
                name: n.name,
                public_addr: n.public_addr,
                cluster_addr: n.cluster_addr,
                host: n.host,
                pid: n.pid,
                started_at_ms: n.started_at,
                heartbeat_at_ms: n.heartbeat_at,
                lease_ms: n.lease_ms,
                tunnels: n.tunnels,
            })
            .collect())
    }
}

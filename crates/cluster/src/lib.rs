//! Node membership: which brokers share this database, and which of them holds each tunnel
//! name.
//!
//! Several `broker` nodes on one Postgres database need nothing else to agree on (no gossip, no
//! consensus of our own): each [joins](Membership::join) with a row in `nodes`, refreshes it
//! every third of its lease ([`Membership::run`]), and removes it when it stops cleanly. The
//! database's clock decides who is alive, so skewed node clocks do not matter. A node silent
//! for longer than its lease is dead, and the names its sessions held may be taken elsewhere.
//!
//! A name is held by at most one session in the whole cluster: [`Membership::claim`] is one
//! atomic statement on the name's row in `holds`, taken when the row is free, held by a dead
//! node, by the same owner (a newer session takes its name over), or held on this very node
//! (whose registry decides between its own sessions). A node that serves a name whose row
//! another node's session took gives it up ([`give_up`]).
//!
//! A SQLite file is one machine's: there a second node is refused at [`Membership::join`] while
//! the first is alive, and claims skip the database (the registry alone decides).
#![warn(missing_docs)]

mod heartbeat;
mod routes;

pub use routes::Routes;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::warn;
use warren_metrics::Metrics;
use warren_registry::{RouteKind, SessionId, StickyKey};
use warren_store::{Claim, Join, NewNode, NodeRow, Store, StoreError};

/// Who this node is, from the config (`node_name`, `cluster_addr`, `node_lease_secs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Unique among the nodes on one database.
    pub name: String,
    /// Where owners and visitors reach it.
    pub public_addr: String,
    /// Where the other nodes reach it.
    pub cluster_addr: Option<String>,
    /// Silent this long, it counts as dead.
    pub lease: Duration,
}

/// Why a node may not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// A SQLite database serves one node, and another is alive on it.
    #[error(
        "the SQLite database is in use by broker node {:?} (pid {} on {}, last heartbeat {} ms ago): \
         a SQLite file serves one broker at a time. Stop that one, or give several nodes one \
         Postgres database",
        .0.name, .0.pid, .0.host, .0.silent_ms()
    )]
    SqliteInUse(NodeRow),
    /// A live node has this node's name.
    #[error(
        "a broker named {:?} is running already (pid {} on {}, last heartbeat {} ms ago): give \
         each node its own node_name (BROKER_NODE_NAME), or stop that one",
        .0.name, .0.pid, .0.host, .0.silent_ms()
    )]
    NameInUse(NodeRow),
    /// Rows of gone processes kept coming back as they were removed.
    #[error("cannot join the nodes on this database: stale node rows keep coming back")]
    Unsettled,
    /// The database said no.
    #[error("cannot join the nodes on this database: {0}")]
    Store(#[from] StoreError),
}

/// Why a claim was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// A session on another live node holds the name.
    #[error("{name:?} is held on node {node}")]
    Held {
        /// The name.
        name: String,
        /// The node that holds it.
        node: String,
        /// Whose tunnel it is there.
        user_id: i64,
    },
    /// The database could not say.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a session claims a name for.
#[derive(Debug, Clone, Copy)]
pub struct Claiming<'a> {
    /// The session on this node.
    pub session: SessionId,
    /// Whose tunnel it is.
    pub user_id: i64,
    /// What kind of route it will be (other nodes serve it as such).
    pub kind: RouteKind,
    /// A random forward's identity ([`sticky_id`]), so it gets this name back on any node.
    pub sticky: Option<&'a str>,
}

/// A random forward's identity as the database keeps it: the key, the bind address and the
/// forward's position among the session's random ones (`warren_registry::StickyKey`).
pub fn sticky_id(key: &StickyKey) -> String {
    format!("{}|{}|{}", key.key, key.address, key.ordinal)
}

/// This node's membership; cheap to share.
pub struct Membership {
    store: Arc<dyn Store>,
    settings: NodeSettings,
    incarnation: i64,
    /// Whether claims go through the database (several nodes may share it).
    shared: bool,
    /// Set when this node's row was found taken over by another process.
    lost: AtomicBool,
    /// Set when this node leaves (at shutdown): its row goes with every hold of its sessions,
    /// so the releases of sessions ending meanwhile have nothing left to do.
    left: AtomicBool,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("settings", &self.settings)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Writes this node's row, or says which live node stands in the way. A row left by a
    /// process of this machine that is gone (a `kill -9`, a crash) never blocks: it is removed
    /// at once rather than waited out.
    pub async fn join(
        store: Arc<dyn Store>,
        settings: NodeSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, JoinError> {
        let shared = store.shared();
        let node = NewNode {
            name: settings.name.clone(),
            incarnation: rand::random::<i64>(),
            public_addr: settings.public_addr.clone(),
            cluster_addr: settings.cluster_addr.clone(),
            host: host_name(),
            pid: i64::from(std::process::id()),
            lease_ms: i64::try_from(settings.lease.as_millis()).unwrap_or(i64::MAX),
        };
        // Each round removes one stale row; more than a few means rows keep coming back.
        for _ in 0..8 {
            match store.join_node(&node, !shared).await? {
                Join::Joined(_) => {
                    return Ok(Arc::new(Self {
                        store,
                        incarnation: node.incarnation,
                        settings,
                        shared,
                        lost: AtomicBool::new(false),
                        left: AtomicBool::new(false),
                        metrics,
                    }));
                }
                Join::Blocked(row) if is_stale(&row, &node) => {
                    warn!(node = %row.name, pid = row.pid, "removing the row of a broker process that is gone");
                    store.forget_node(&row.name, row.incarnation).await?;
                }
                Join::Blocked(row) if row.name == node.name => {
                    return Err(JoinError::NameInUse(row));
                }
                Join::Blocked(row) => return Err(JoinError::SqliteInUse(row)),
            }
        }
        Err(JoinError::Unsettled)
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Whether other nodes may share the database (claims go through it).
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Claims `name` for `session` of `user_id` on this node: free, held by a dead node, by
    /// the same user elsewhere (the newer session takes it over, as on one node; the other
    /// node gives it up when it reads the change, see [`Routes`]), or held on this node
    /// already (the registry decides between this node's own sessions). Refused while
    /// another user's session on another live node holds it.
    pub async fn claim(&self, name: &str, claim: &Claiming<'_>) -> Result<(), ClaimError> {
        if !self.shared {
            return Ok(());
        }
        let session = i64::try_from(claim.session).unwrap_or(i64::MAX);
        let row = Claim {
            node: &self.settings.name,
            session,
            user_id: claim.user_id,
            kind: claim.kind.as_str(),
            sticky: claim.sticky,
        };
        match self.store.claim_hold(name, &row).await? {
            None => Ok(()),
            Some(hold) => {
                self.metrics.cluster_claims_refused.increment(1);
                Err(ClaimError::Held {
                    name: name.to_owned(),
                    node: hold.node,
                    user_id: hold.user_id,
                })
            }
        }
    }

    /// The name a random forward with this identity (`sticky`) had, if `user_id` may have it
    /// back here: theirs, held on another node, dead or alive (the point of asking: a
    /// reconnect takes it over, as on one node, where the key's name is remembered while it
    /// is live), else on this one. Asked before this node's own memory, which may hold a
    /// fresher name than the one the owner had elsewhere.
    pub async fn sticky_name(&self, sticky: &str, user_id: i64) -> Option<String> {
        if !self.shared {
            return None;
        }
        let holds = match self.store.sticky_holds(sticky).await {
            Ok(holds) => holds,
            Err(e) => {
                warn!(error = %e, "sticky name lookup failed");
                return None;
            }
        };
        let mut here = None;
        for hold in holds.into_iter().filter(|h| h.user_id == user_id) {
            if hold.node == self.settings.name {
                here.get_or_insert(hold.name);
                continue;
            }
            return Some(hold.name);
        }
        here
    }

    /// Lets go of `name` if `session` still holds it (a later session of this node that
    /// claimed it since keeps it). Failures are logged: the row goes at the latest when this
    /// node leaves, or is taken over once this node is dead.
    ///
    /// At shutdown, sessions end while the node leaves: their releases are skipped once it
    /// has, and one that fails because the process is going is no warning (the leave, or
    /// the lease, takes the hold with the rest).
    pub async fn release(&self, name: &str, session: SessionId) {
        if !self.shared || self.left.load(Ordering::Relaxed) {
            return;
        }
        let session = i64::try_from(session).unwrap_or(i64::MAX);
        if let Err(e) = self
            .store
            .release_hold(name, &self.settings.name, session)
            .await
        {
            if self.left.load(Ordering::Relaxed) {
                tracing::debug!(%name, error = %e, "hold not released; this node left");
            } else {
                warn!(%name, error = %e, "cannot release a name's hold");
            }
        }
    }

    /// Removes this node's row and every hold of its sessions: a clean leave, at shutdown.
    pub async fn leave(&self) {
        if self.lost.load(Ordering::Relaxed) {
            return;
        }
        self.left.store(true, Ordering::Relaxed);
        match self
            .store
            .forget_node(&self.settings.name, self.incarnation)
            .await
        {
            Ok(_) => tracing::info!(node = %self.settings.name, "left the cluster"),
            Err(e) => warn!(error = %e, "cannot remove this node's row; it expires with its lease"),
        }
    }
}

/// A session on node `holder` (of user `holder_user`) holds `route`'s name now: this node
/// stops serving it (parked for the grace period, so a visitor landing here goes on to the
/// holder through the remote route), and the session that served it is told. Whether it was
/// still served here.
pub(crate) fn give_up(
    registry: &warren_registry::Registry,
    route: &warren_registry::Route,
    holder: &str,
    holder_user: i64,
) -> bool {
    if !registry.unbind(&route.name, route.session) {
        return false;
    }
    if holder_user == route.owner {
        tracing::info!(tunnel = %route.name, tenant = route.owner, node = %holder, "taken over by the owner's newer session on another node");
        route.endpoint.notify(format!(
            "{} was taken over by a newer session of yours, on node {holder}",
            route.name
        ));
    } else {
        warn!(
            tunnel = %route.name,
            tenant = route.owner,
            node = %holder,
            "a session on another node took this name while this node could not reach the \
             database: no longer served here"
        );
        route.endpoint.notify(format!(
            "tunnel {} is now served by a session on node {holder}, which claimed it while this \
             broker could not reach its database; this session no longer serves it",
            route.name
        ));
    }
    true
}

/// A blocking row this start may remove: written on this machine by a process that is gone,
/// or by this very process id (a container restarted as pid 1 again).
fn is_stale(row: &NodeRow, me: &NewNode) -> bool {
    row.host == me.host && (row.pid == me.pid || !process_exists(row.pid))
}

/// Whether a process with this id runs on this machine. Where that cannot be told (no
/// `/proc`), it is assumed to run, and the row is waited out for its lease instead.
fn process_exists(pid: i64) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// The kernel's host name (Linux), else `$HOSTNAME`, else `unknown`: the default node name,
/// and how a restart on the same machine recognises its own stale row.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

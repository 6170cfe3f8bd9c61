//! Routes held on other nodes, kept in this node's registry as the database changes.
//!
//! Every change to `holds` is announced by Postgres (`LISTEN warren_holds`, a trigger's
//! `pg_notify` with the name); this task reads that one row and binds, moves or parks the name
//! in the registry's remote map, so a visitor landing here reaches the tunnel within a second of
//! its claim. Lookups stay in memory: nothing is queried per visitor. What a notification cannot
//! carry is checked on a timer: a node dying (its names are parked, so visitors get 503 with
//! `Retry-After` until the owner is back somewhere), and, when notifications may have been
//! missed (at start, after the listening connection dropped, and every 30 s if the holds
//! changed at all), every hold is read again and the map made to match. At rest that costs one
//! query per tick for the nodes and one small aggregate for the holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use warren_peer::{Dialer, PeerEndpoint};
use warren_registry::{Lookup, PortAllocator, Registry, RouteKind, tcp_port};
use warren_store::{HoldEvents, HoldRoute, NodeRow};

use crate::Membership;

/// At most this often, every hold is read again to heal a missed notification.
const FULL_EVERY: Duration = Duration::from_secs(30);

/// Where this node believes a name is served, as last applied to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    node: String,
    addr: Option<String>,
    kind: RouteKind,
    owner: i64,
    alive: bool,
    /// Released (the row went): parked until then, forgotten after.
    released: Option<Instant>,
}

/// The task that keeps other nodes' names in the registry.
pub struct Routes {
    membership: Arc<Membership>,
    registry: Arc<Registry>,
    dialer: Arc<Dialer>,
    ports: Option<Arc<dyn PortAllocator>>,
    /// How long a name whose session or node went away answers "back soon" here.
    grace: Duration,
    known: HashMap<String, Known>,
    /// `holds_version` when every hold was last read; `None`: read them at the next tick.
    version: Option<(i64, i64)>,
    last_full: Instant,
    /// Since when this node has read the database without a failure: `None` during an outage.
    /// Another node's silence means it is dead only once this node has been connected for a
    /// whole lease itself: after a database outage longer than a lease every node's last beat
    /// is old, and a live node beats again within a third of a lease of the database's return
    /// (e2e `cluster::a_postgres_outage_stops_no_tunnel_in_the_cluster`: without this, node 2
    /// answered 503 for node 1's tunnel right after Postgres came back).
    connected_since: Option<Instant>,
}

impl Routes {
    /// Reaches other nodes with `dialer`; opens the TCP ports of their raw TCP tunnels with
    /// `ports`; parks a gone session's or node's names for `grace`.
    pub fn new(
        membership: Arc<Membership>,
        registry: Arc<Registry>,
        dialer: Arc<Dialer>,
        ports: Option<Arc<dyn PortAllocator>>,
        grace: Duration,
    ) -> Self {
        Self {
            membership,
            registry,
            dialer,
            ports,
            grace,
            known: HashMap::new(),
            version: None,
            last_full: Instant::now(),
            connected_since: None,
        }
    }

    /// Whether a node's silence can be believed now (see `connected_since`).
    fn trusts_silence(&self) -> bool {
        self.connected_since
            .is_some_and(|since| since.elapsed() >= self.membership.settings.lease)
    }

    /// `alive` as read for `name` on `node`, unless it would take a name this node serves as
    /// live on that node for dead while silence cannot be believed yet.
    fn believed_alive(&self, name: &str, node: &str, alive: bool) -> bool {
        alive
            || (!self.trusts_silence()
                && self
                    .known
                    .get(name)
                    .is_some_and(|k| k.alive && k.released.is_none() && k.node == node))
    }

    /// Runs until `shutdown`. Returns at once on a database that serves one node.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if !self.membership.shared() {
            return;
        }
        let every = (self.membership.settings.lease / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut events: Option<Box<dyn HoldEvents>> = None;
        loop {
            if events.is_none() {
                match self.membership.store.hold_events().await {
                    Ok(Some(e)) => {
                        events = Some(e);
                        // Whatever changed before this listener started is read in full.
                        self.version = None;
                    }
                    Ok(None) => return,
                    Err(e) => warn!(error = %e, "cannot listen for other nodes' claims; retrying"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = next(&mut events) => match event {
                    Ok(Some(name)) => {
                        // A burst (a reconnect storm's claims) is read in one query: the names
                        // notified within BATCH_WINDOW, up to BATCH_MAX.
                        let mut names = vec![name];
                        let lost = gather(&mut events, &mut names).await;
                        self.refresh(names).await;
                        if lost {
                            self.version = None;
                        }
                    }
                    Ok(None) => self.version = None,
                    Err(e) => {
                        warn!(error = %e, "lost the database's notifications; reconnecting");
                        events = None;
                        self.version = None;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                _ = tick.tick() => self.check().await,
            }
        }
    }

    /// These names' rows changed: read them and apply them (a name without a row was
    /// released).
    async fn refresh(&mut self, mut names: Vec<String>) {
        names.sort_unstable();
        names.dedup();
        let read_at = Instant::now();
        match self.membership.store.hold_routes_of(&names).await {
            Ok(rows) => {
                let found: std::collections::HashSet<String> =
                    rows.iter().map(|r| r.name.clone()).collect();
                for row in rows {
                    self.apply(row, read_at);
                }
                for name in names.iter().filter(|n| !found.contains(*n)) {
                    self.released(name);
                }
            }
            Err(e) => {
                warn!(names = names.len(), error = %e, "cannot read changed holds; reading all at the next tick");
                self.version = None;
            }
        }
    }

    /// The timer: nodes that died or came back, released names past their grace, and a full
    /// read when notifications may have been missed.
    async fn check(&mut self) {
        match self.membership.store.list_nodes().await {
            Ok(nodes) => {
                self.connected_since.get_or_insert_with(Instant::now);
                self.nodes_changed(&nodes);
            }
            Err(e) => {
                self.connected_since = None;
                warn!(error = %e, "cannot list the nodes");
            }
        }
        let now = Instant::now();
        let expired: Vec<String> = self
            .known
            .iter()
            .filter(|(_, k)| k.released.is_some_and(|at| now >= at + self.grace))
            .map(|(n, _)| n.clone())
            .collect();
        for name in expired {
            self.known.remove(&name);
            self.registry.unbind_remote(&name);
        }
        let due = self.version.is_none() || self.last_full.elapsed() >= FULL_EVERY;
        if !due {
            return;
        }
        let version = match self.membership.store.holds_version().await {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "cannot read the holds' version");
                return;
            }
        };
        if self.version == Some(version) {
            self.last_full = Instant::now();
            return;
        }
        let read_at = Instant::now();
        match self.membership.store.hold_routes().await {
            Ok(rows) => {
                let seen: std::collections::HashSet<String> =
                    rows.iter().map(|r| r.name.clone()).collect();
                let n = rows.len();
                for row in rows {
                    self.apply(row, read_at);
                }
                let gone: Vec<String> = self
                    .known
                    .iter()
                    .filter(|(name, k)| k.released.is_none() && !seen.contains(*name))
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in gone {
                    self.released(&name);
                }
                debug!(holds = n, "read every hold");
                self.version = Some(version);
                self.last_full = Instant::now();
            }
            Err(e) => warn!(error = %e, "cannot read the holds"),
        }
    }

    /// Applies each node's liveness and address to the names it holds.
    fn nodes_changed(&mut self, nodes: &[NodeRow]) {
        let by_name: HashMap<&str, &NodeRow> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let stale: Vec<(String, Known)> = self
            .known
            .iter()
            .filter(|(_, k)| k.released.is_none())
            .filter_map(|(name, k)| {
                let (alive, addr) = by_name
                    .get(k.node.as_str())
                    .map_or((false, None), |n| (n.alive(), n.cluster_addr.clone()));
                let alive = self.believed_alive(name, &k.node, alive);
                (alive != k.alive || addr != k.addr).then(|| {
                    (
                        name.clone(),
                        Known {
                            alive,
                            addr,
                            ..k.clone()
                        },
                    )
                })
            })
            .collect();
        for (name, k) in stale {
            if !k.alive {
                info!(%name, node = %k.node, "the node holding this tunnel is gone: visitors are asked to retry");
            }
            self.place(&name, k);
        }
    }

    /// A hold as read from the database (the read started at `read_at`).
    fn apply(&mut self, row: HoldRoute, read_at: Instant) {
        if row.node == self.membership.name() {
            // This node's own sessions are the registry's business.
            if self.known.remove(&row.name).is_some() {
                self.registry.unbind_remote(&row.name);
            }
            return;
        }
        // A session here serves the name, bound before this row was read: its claim came
        // before the read, so another node's session claimed the name since (the owner's
        // newer session, or one given it while this node looked dead). A route bound after
        // the read started may be the newer claim; the notification of its own row settles it.
        if let Lookup::Live(local) = self.registry.lookup_local(&row.name)
            && local.bound_at() < read_at
        {
            crate::give_up(&self.registry, &local, &row.node, row.user_id);
        }
        let alive = self.believed_alive(&row.name, &row.node, row.alive);
        let k = Known {
            node: row.node,
            addr: row.cluster_addr,
            kind: RouteKind::from_word(&row.kind),
            owner: row.user_id,
            alive,
            released: None,
        };
        if self.known.get(&row.name) != Some(&k) {
            self.place(&row.name, k);
        }
    }

    /// Binds or parks `name` as `k` says, and remembers it.
    fn place(&mut self, name: &str, k: Known) {
        match (&k.addr, k.alive) {
            (Some(addr), true) => {
                let endpoint = Arc::new(PeerEndpoint::new(
                    self.dialer.clone(),
                    &k.node,
                    addr,
                    name,
                    k.owner,
                ));
                self.registry.bind_remote(name, k.owner, k.kind, endpoint);
                if k.kind == RouteKind::Tcp
                    && let (Some(port), Some(ports)) = (tcp_port(name), &self.ports)
                    && let Err(e) = ports.allocate(Some(port))
                {
                    warn!(%name, node = %k.node, error = %e, "cannot open the port of a raw TCP tunnel held on another node");
                }
            }
            (None, true) => {
                warn!(%name, node = %k.node, "the node holding this tunnel has no cluster_addr: visitors here cannot reach it");
                self.registry.park_remote(name, k.owner, self.grace);
            }
            (_, false) => self.registry.park_remote(name, k.owner, self.grace),
        }
        self.known.insert(name.to_owned(), k);
    }

    /// `name`'s row went: its session let go. Visitors here get "back soon" for the grace
    /// period, as on the node that held it, unless a claim elsewhere comes first.
    fn released(&mut self, name: &str) {
        if let Some(k) = self.known.get_mut(name)
            && k.released.is_none()
        {
            k.released = Some(Instant::now());
            self.registry.park_remote(name, k.owner, self.grace);
        }
    }
}

/// How long a burst of notifications is gathered into one read.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// The most names read at once.
const BATCH_MAX: usize = 500;

/// Adds to `names` what else is notified within [`BATCH_WINDOW`]; true when the connection
/// was lost meanwhile (notifications may be missing).
async fn gather(events: &mut Option<Box<dyn HoldEvents>>, names: &mut Vec<String>) -> bool {
    let Some(listening) = events.as_mut() else {
        return false;
    };
    let until = tokio::time::Instant::now() + BATCH_WINDOW;
    while names.len() < BATCH_MAX {
        match tokio::time::timeout_at(until, listening.next()).await {
            Ok(Ok(Some(name))) => names.push(name),
            // Lost or failed: whatever was missed is read in full at the next tick.
            Ok(Ok(None)) | Ok(Err(_)) => return true,
            Err(_) => return false,
        }
    }
    false
}

/// The next notification, or never when there is no listener.
async fn next(events: &mut Option<Box<dyn HoldEvents>>) -> warren_store::Result<Option<String>> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

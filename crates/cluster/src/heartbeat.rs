//! The heartbeat: this node's row refreshed every third of its lease, and the other nodes'
//! comings and goings noticed (logged, and counted in `warren_cluster_nodes_alive`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use warren_registry::{BROKER_OWNER, Registry, Route};

use crate::{ClaimError, Claiming, Membership};

/// Rows of nodes silent this long are removed: long enough for `broker nodes` to show a dead
/// node to whoever investigates, short enough that renamed nodes do not pile up.
const REAP_AFTER_MS: i64 = 24 * 3600 * 1000;
/// Beats between two reaps.
const REAP_EVERY: u64 = 100;

impl Membership {
    /// Beats until `shutdown`, then leaves (this node's row and holds go at once, rather than
    /// after a lease). `registry` gives the tunnel count each beat reports.
    pub async fn run(self: Arc<Self>, registry: Arc<Registry>, shutdown: CancellationToken) {
        // Three beats per lease: one lost write does not make a live node look dead.
        let every = (self.settings.lease / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut alive = BTreeSet::new();
        let mut beats = 0u64;
        // When the last beat that the database took was sent.
        let mut last_beat = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let sent = Instant::now();
            if self.beat(&registry, &mut alive).await {
                // A beat went missing: cut off for longer, the other nodes took this one for
                // dead (past a lease) and may have given its names to other sessions.
                if self.shared && sent.duration_since(last_beat) > every * 2 {
                    self.heal(&registry).await;
                }
                last_beat = sent;
            }
            beats += 1;
            if beats.is_multiple_of(REAP_EVERY) {
                match self.store.reap_nodes(REAP_AFTER_MS).await {
                    Ok(0) => {}
                    Ok(n) => info!(nodes = n, "removed the rows of nodes silent for a day"),
                    Err(e) => warn!(error = %e, "cannot remove long-dead nodes"),
                }
            }
        }
        self.leave().await;
    }

    /// Writes this node's heartbeat (and notes other nodes' comings and goings); whether the
    /// database took it.
    async fn beat(&self, registry: &Registry, alive: &mut BTreeSet<String>) -> bool {
        let tunnels = registry
            .routes()
            .iter()
            .filter(|r| r.owner != BROKER_OWNER)
            .count();
        let tunnels = i64::try_from(tunnels).unwrap_or(i64::MAX);
        match self
            .store
            .heartbeat(&self.settings.name, self.incarnation, tunnels)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.cluster_heartbeat_failures.increment(1);
                if !self.lost.swap(true, Ordering::Relaxed) {
                    error!(
                        node = %self.settings.name,
                        "this node's row was taken over by another broker with the same node_name: \
                         names claimed here are no longer protected; stop one of the two"
                    );
                }
                return false;
            }
            Err(e) => {
                self.metrics.cluster_heartbeat_failures.increment(1);
                warn!(error = %e, "heartbeat failed; past the lease, other nodes may take this node's names");
                return false;
            }
        }
        if !self.shared {
            self.metrics.cluster_nodes_alive.set(1.0);
            return true;
        }
        let nodes = match self.store.list_nodes().await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "cannot list the nodes");
                return true;
            }
        };
        let now: BTreeSet<String> = nodes
            .iter()
            .filter(|n| n.alive())
            .map(|n| n.name.clone())
            .collect();
        for n in nodes.iter().filter(|n| n.name != self.settings.name) {
            match (alive.contains(&n.name), now.contains(&n.name)) {
                (false, true) => info!(node = %n.name, public_addr = %n.public_addr, "node alive"),
                (true, false) => warn!(
                    node = %n.name,
                    silent_ms = n.silent_ms(),
                    "node silent past its lease: its names may be taken here"
                ),
                _ => {}
            }
        }
        self.metrics.cluster_nodes_alive.set(now.len() as f64);
        *alive = now;
        true
    }

    /// Back after beats went missing: a name that a session here serves but whose hold another
    /// node's session took meanwhile (this node looked dead) is no longer served here, and its
    /// owner's session here is told; visitors landing here go to the new holder. A name whose
    /// hold went altogether is claimed again for the session that serves it. So two sessions
    /// serve one name for at most the time this node could not reach the database, plus a
    /// beat: while cut off, it keeps serving (a database outage must not stop tunnels).
    async fn heal(&self, registry: &Registry) {
        let local: Vec<Arc<Route>> = registry
            .routes()
            .into_iter()
            .filter(|r| r.owner != BROKER_OWNER && r.endpoint.node().is_none())
            .collect();
        let mut lost = 0usize;
        for chunk in local.chunks(HEAL_CHUNK) {
            let names: Vec<String> = chunk.iter().map(|r| r.name.clone()).collect();
            let rows = match self.store.hold_routes_of(&names).await {
                Ok(rows) => rows,
                Err(e) => {
                    warn!(error = %e, "cannot check this node's holds after its beats went missing");
                    return;
                }
            };
            let holders: HashMap<&str, (&str, i64)> = rows
                .iter()
                .map(|r| (r.name.as_str(), (r.node.as_str(), r.user_id)))
                .collect();
            for route in chunk {
                let (holder, user) = match holders.get(route.name.as_str()) {
                    Some((node, _)) if *node == self.settings.name => continue,
                    Some((node, user)) => ((*node).to_owned(), *user),
                    None => {
                        let again = Claiming {
                            session: route.session,
                            user_id: route.owner,
                            kind: route.kind,
                            sticky: None,
                        };
                        match self.claim(&route.name, &again).await {
                            Ok(()) => continue,
                            Err(ClaimError::Held { node, user_id, .. }) => (node, user_id),
                            Err(ClaimError::Store(e)) => {
                                warn!(name = %route.name, error = %e, "cannot claim a name again after beats went missing");
                                continue;
                            }
                        }
                    }
                };
                if crate::give_up(registry, route, &holder, user) {
                    lost += 1;
                }
            }
        }
        info!(
            tunnels = local.len(),
            lost, "checked this node's names after missed heartbeats"
        );
    }
}

/// Names checked per query when healing.
const HEAL_CHUNK: usize = 1000;

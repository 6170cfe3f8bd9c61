//! The heartbeat: this node's row refreshed every third of its lease, and the other nodes'
//! comings and goings noticed (logged, and counted in `warren_cluster_nodes_alive`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use warren_registry::{BROKER_OWNER, Registry};

use crate::Membership;

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
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.beat(&registry, &mut alive).await;
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

    async fn beat(&self, registry: &Registry, alive: &mut BTreeSet<String>) {
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
                return;
            }
            Err(e) => {
                self.metrics.cluster_heartbeat_failures.increment(1);
                warn!(error = %e, "heartbeat failed; past the lease, other nodes may take this node's names");
                return;
            }
        }
        if !self.shared {
            self.metrics.cluster_nodes_alive.set(1.0);
            return;
        }
        let nodes = match self.store.list_nodes().await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "cannot list the nodes");
                return;
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
    }
}

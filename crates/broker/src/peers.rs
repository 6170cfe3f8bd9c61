//! This node's part in a cluster's visitor paths: the listener other nodes forward visitors
//! to, and the task that keeps their tunnels in this node's registry (`warren-peer`,
//! `warren_cluster::Routes`). Nothing runs on a database that serves one node.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use warren_cluster::{Membership, Routes};
use warren_peer::{ClusterCa, Dialer, NodeTls};
use warren_registry::{PortAllocator, Registry};
use warren_shards::Shards;
use warren_store::Store;

/// What [`start`] needs beside the config.
pub struct Peers {
    pub store: Arc<dyn Store>,
    pub cluster: Arc<Membership>,
    pub registry: Arc<Registry>,
    pub ports: Option<Arc<dyn PortAllocator>>,
    /// Bound before the node joined, so its address could be announced.
    pub listener: Option<TcpListener>,
    pub grace: std::time::Duration,
    /// The tunnel threads, where streams from other nodes are copied to their owners' sessions.
    pub shards: Arc<Shards>,
}

/// Issues this node's certificate from the cluster CA (made and stored by the first node to
/// need it) and starts the listener and the routes task.
pub async fn start(p: Peers, tasks: &TaskTracker, shutdown: &CancellationToken) -> Result<()> {
    if !p.cluster.shared() {
        return Ok(());
    }
    let fresh = ClusterCa::generate()?;
    let (cert_pem, key_pem) = p
        .store
        .cluster_ca((&fresh.cert_pem, &fresh.key_pem))
        .await
        .context("cannot read the cluster CA from the database")?;
    let tls = NodeTls::issue(&ClusterCa { cert_pem, key_pem })?;
    let dialer = Arc::new(Dialer::new(&tls)?);
    match p.listener {
        Some(listener) => {
            info!(addr = %listener.local_addr()?, "listening for the other nodes' visitors");
            let registry = p.registry.clone();
            let stop = shutdown.clone();
            let shards = p.shards.clone();
            tasks.spawn(async move {
                let patience = warren_peer::Patience::default();
                warren_peer::serve(listener, &tls, registry, shards, patience, stop).await
            });
        }
        None => warn!(
            "no cluster_addr: other nodes cannot forward visitors to this node's tunnels \
             (their visitors get 503)"
        ),
    }
    // Each holder's counters of its tunnels are the cluster's, a second behind for the others'.
    tasks.spawn(warren_peer::report_counts(
        p.registry.clone(),
        std::time::Duration::from_secs(1),
        shutdown.clone(),
    ));
    let routes = Routes::new(p.cluster, p.registry, dialer, p.ports, p.grace);
    tasks.spawn(routes.run(shutdown.clone()));
    Ok(())
}

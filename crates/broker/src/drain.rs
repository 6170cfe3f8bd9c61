//! SIGTERM: stop taking new work, let visitors' requests in flight finish, tell tunnel owners,
//! then close.
//!
//! The order matters. The SSH sessions must outlive the drain, since the requests in flight run
//! through their tunnels; so the listeners stop first (`draining`), owners are told, visitor
//! connections get up to `shutdown_grace_secs` to finish, and only then are sessions
//! disconnected and every task stopped (`shutdown`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use warren_edge::Edge;
use warren_ssh::Sessions;

/// The two stages of shutdown.
pub struct Stages {
    /// Listeners stop accepting; visitor connections finish their request in flight.
    pub draining: CancellationToken,
    /// Everything stops: SSH sessions are disconnected, tasks end.
    pub shutdown: CancellationToken,
}

impl Stages {
    /// `draining` is a child of `shutdown`, so stopping outright also stops accepting.
    pub fn new() -> Self {
        let shutdown = CancellationToken::new();
        Self {
            draining: shutdown.child_token(),
            shutdown,
        }
    }
}

/// Runs the shutdown: stop accepting, tell owners, drain visitors for at most `grace`, then
/// stop everything and give tasks a moment to end.
pub async fn drain(
    stages: &Stages,
    grace: Duration,
    edge: &Edge,
    sessions: &Sessions,
    tasks: &TaskTracker,
) {
    stages.draining.cancel();
    let busy = edge.visitor_connections();
    let told = sessions.announce(&format!(
        "The broker is shutting down: requests in flight get up to {} s to finish, then this \
         session closes. Your names stay yours for the grace period; reconnect to get them back.",
        grace.as_secs()
    ));
    info!(
        visitor_connections = busy,
        sessions = told,
        grace_secs = grace.as_secs(),
        "shutting down: no new connections; draining visitors"
    );
    let cut = edge.drain(grace).await;
    if cut > 0 {
        warn!(
            visitor_connections = cut,
            "shutdown grace over: closing the visitor connections still open"
        );
    }
    // Awaited here, so each owner's client gets the reason before the process exits.
    sessions
        .disconnect_all("the broker is shutting down; reconnect to get your names back")
        .await;
    stages.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    info!("stopped");
}

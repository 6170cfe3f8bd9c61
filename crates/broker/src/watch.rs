//! Applies admin changes to the running server by tailing the store's audit log.
//!
//! The admin CLI is another process (perhaps on another node, with Postgres); polling the log
//! once a second works the same on SQLite and Postgres and needs no extra channel. Disabled
//! users and removed keys lose their sessions; reservations refresh the edge's "offline"
//! answers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren_registry::Registry;
use warren_ssh::Sessions;
use warren_store::Store;

use crate::public::Public;

const POLL: Duration = Duration::from_secs(1);
/// Audit events read per query.
const PAGE: i64 = 500;

pub struct Watcher {
    store: Arc<dyn Store>,
    public: Arc<Public>,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    cursor: i64,
}

impl Watcher {
    /// Loads the current reservations and remembers where the log ends.
    pub async fn start(
        public: Arc<Public>,
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        sessions: Arc<Sessions>,
    ) -> Result<Self> {
        let cursor = store.last_event_id().await?;
        let w = Self {
            public,
            store,
            registry,
            sessions,
            cursor,
        };
        w.reload_reserved().await?;
        Ok(w)
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Drain the log, not one page per tick: after a reconnect storm (10,000 binds and
            // claims) one page a second left a `user.disable` queued behind ~40 s of binds.
            loop {
                match self.poll().await {
                    Ok(n) if n == PAGE as usize => continue,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(error = %e, "cannot read the audit log; retrying");
                        break;
                    }
                }
            }
            self.registry.sweep();
            self.public.tick().await;
        }
    }

    /// Handles the next page of the audit log; returns how many events it held.
    async fn poll(&mut self) -> Result<usize> {
        let events = self.store.events_since(self.cursor, PAGE).await?;
        let mut names_changed = false;
        for e in &events {
            match e.action.as_str() {
                "user.disable" => {
                    if let Some(uid) = e.user_id {
                        let routes = self.registry.drop_owner(uid);
                        let n = self
                            .sessions
                            .disconnect_user(uid, "your account was disabled")
                            .await;
                        info!(user = %e.subject, sessions = n, tunnels = routes.len(), "user disabled: tunnels dropped");
                    }
                }
                "key.remove" => {
                    let n = self
                        .sessions
                        .disconnect_key(&e.subject, "your key was removed")
                        .await;
                    info!(key = %e.subject, sessions = n, "key removed: sessions dropped");
                }
                "name.reserve" => {
                    names_changed = true;
                    self.public.name_up(&e.subject, e.user_id);
                }
                "name.release" => {
                    names_changed = true;
                    if !matches!(
                        self.registry.lookup(&e.subject),
                        warren_registry::Lookup::Live(_)
                    ) {
                        self.public.name_down(&e.subject);
                    }
                }
                // The binder owns a random name; a reserved one only its holder can bind.
                "tunnel.bind" if warren_registry::tcp_port(&e.subject).is_none() => {
                    self.public.name_up(&e.subject, e.user_id);
                }
                "tunnel.unbind"
                    if warren_registry::tcp_port(&e.subject).is_none()
                        && !self.registry.is_reserved(&e.subject) =>
                {
                    self.public.name_fading(&e.subject);
                }
                _ => {}
            }
            self.cursor = e.id;
        }
        if names_changed {
            self.reload_reserved().await?;
        }
        Ok(events.len())
    }

    async fn reload_reserved(&self) -> Result<()> {
        let names: HashSet<String> = self
            .store
            .list_reservations(None)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();
        self.registry.set_reserved(names);
        Ok(())
    }
}

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
            if let Err(e) = self.poll().await {
                warn!(error = %e, "cannot read the audit log; retrying");
            }
            self.registry.sweep();
            self.public.tick().await;
        }
    }

    async fn poll(&mut self) -> Result<()> {
        let events = self.store.events_since(self.cursor, 500).await?;
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
                    self.public.name_up(&e.subject, true);
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
                "tunnel.bind" if !e.subject.starts_with("tcp:") => {
                    let reserved = self.registry.is_reserved(&e.subject);
                    self.public.name_up(&e.subject, reserved);
                }
                "tunnel.unbind"
                    if !e.subject.starts_with("tcp:") && !self.registry.is_reserved(&e.subject) =>
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
        Ok(())
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

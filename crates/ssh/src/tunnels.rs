//! One connection's tunnel side: who it is (once known), the forwards it holds and the counters
//! that name them. Shared between the handler and, for a connection waiting on a device
//! pairing, the task that binds its waiting forwards the moment the approval lands: russh only
//! calls the handler when the client sends something, and an `ssh -N` client waiting for its
//! forwards sends nothing.

use std::sync::{Arc, Mutex, MutexGuard};

use tracing::warn;
use warren_registry::SessionId;
use warren_store::{AuditAction, AuditEvent, User};

use crate::console::Console;
use crate::forwards::{Forward, Forwards};
use crate::server::SshServer;

/// Fake "allocated ports" for `-R 0:` forwards start here. Nothing listens on them: OpenSSH only
/// needs a distinct non-zero number per forward to match our channels to its forwards.
const FIRST_ALLOCATED_PORT: u32 = 40000;

/// A forward asked for while the key waits on a pairing: answered at once (so the client
/// neither waits nor gives up), bound once the key has an owner.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    pub(crate) address: String,
    /// The port the client asked for.
    pub(crate) asked: u32,
    /// The port we answered with; channels for this forward must name it.
    pub(crate) reply: u32,
    /// How the approver sees it (`chat:80`).
    pub(crate) shown: String,
}

/// The mutable part. A std `Mutex`: held for a few field edits, never across an await.
pub(crate) struct State {
    pub(crate) user: Option<User>,
    /// The key's `SHA256:` fingerprint.
    pub(crate) key: Option<String>,
    pub(crate) forwards: Forwards,
    /// Random-name and TCP forwards bound so far: the ordinal of the next one's sticky key.
    pub(crate) random_count: u32,
    pub(crate) tcp_count: u32,
    /// The next fake port for a `-R …:0:` forward.
    pub(crate) next_port: u32,
    /// Forwards asked for while a pairing is pending.
    pub(crate) waiting: Vec<Waiting>,
    /// The connection has ended: nothing may be bound for it any more (a late approval).
    pub(crate) closed: bool,
}

/// A cheap handle to one connection's tunnel side.
#[derive(Clone)]
pub(crate) struct Tunnels {
    pub(crate) server: Arc<SshServer>,
    pub(crate) id: SessionId,
    pub(crate) console: Console,
    state: Arc<Mutex<State>>,
}

impl Tunnels {
    pub(crate) fn new(server: Arc<SshServer>, id: SessionId, console: Console) -> Self {
        Self {
            server,
            id,
            console,
            state: Arc::new(Mutex::new(State {
                user: None,
                key: None,
                forwards: Forwards::default(),
                random_count: 0,
                tcp_count: 0,
                next_port: FIRST_ALLOCATED_PORT,
                waiting: Vec::new(),
                closed: false,
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection's user, once it has one.
    pub(crate) fn user(&self) -> Option<User> {
        self.lock().user.clone()
    }

    /// The key's fingerprint, or empty before authentication.
    pub(crate) fn key(&self) -> String {
        self.lock().key.clone().unwrap_or_default()
    }

    pub(crate) fn actor(&self) -> String {
        match &self.lock().user {
            Some(u) => format!("ssh:{}", u.name),
            None => "ssh".into(),
        }
    }

    pub(crate) async fn audit(&self, action: AuditAction, subject: &str, detail: String) {
        let user_id = self.lock().user.as_ref().map(|u| u.id);
        let mut e = AuditEvent::new(&self.actor(), action, subject, user_id);
        e.detail = detail;
        if let Err(err) = self.server.store.record(&e).await {
            warn!(error = %err, "audit write failed");
        }
    }

    /// Unbinds a forward that was cancelled or whose session ended, and lets go of its
    /// cluster-wide hold (on a task: this runs in `Drop` too).
    pub(crate) fn release(&self, fwd: &Forward) {
        self.server.registry.unbind(&fwd.name, self.id);
        if let Some(cluster) = self.server.cluster.clone().filter(|c| c.shared())
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (name, session) = (fwd.name.clone(), self.id);
            rt.spawn(async move { cluster.release(&name, session).await });
        }
        if let Some(key) = &fwd.sticky {
            // Restart the stickiness clock from the moment the forward went away.
            self.server.registry.remember(key.clone(), &fwd.name);
        }
    }

    /// The connection ended: no more binds, and every forward it held, to be released.
    pub(crate) fn close(&self) -> Vec<Forward> {
        let mut s = self.lock();
        s.closed = true;
        s.waiting.clear();
        s.forwards.drain().collect()
    }
}

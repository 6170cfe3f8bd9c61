//! Live SSH sessions by id, so admin changes (a user disabled, a key removed) can reach them.

use std::collections::HashMap;
use std::sync::Mutex;

use russh::server::Handle;

use crate::console::Console;
use warren_registry::SessionId;

struct Entry {
    user_id: i64,
    key: String,
    handle: Handle,
    console: Console,
}

/// The table of authenticated sessions. A std `Mutex` is fine: it is held for map edits only,
/// never across an await.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<SessionId, Entry>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.len())
            .finish()
    }
}

impl Sessions {
    pub(crate) fn insert(
        &self,
        id: SessionId,
        user_id: i64,
        key: String,
        handle: Handle,
        console: Console,
    ) {
        self.lock().insert(
            id,
            Entry {
                user_id,
                key,
                handle,
                console,
            },
        );
    }

    /// Writes `line` to every session's terminal (queued until a session channel opens, as
    /// every console line is); returns how many sessions. For news all owners need, such as a
    /// shutdown, while their sessions are still up.
    pub fn announce(&self, line: &str) -> usize {
        let map = self.lock();
        for e in map.values() {
            e.console.line(line);
        }
        map.len()
    }

    pub(crate) fn remove(&self, id: SessionId) {
        self.lock().remove(&id);
    }

    /// Number of authenticated sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is authenticated.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Disconnects every session of `user_id`; returns how many.
    pub async fn disconnect_user(&self, user_id: i64, reason: &str) -> usize {
        self.disconnect_where(|e| e.user_id == user_id, reason)
            .await
    }

    /// Disconnects every session that authenticated with the key `fingerprint`.
    pub async fn disconnect_key(&self, fingerprint: &str, reason: &str) -> usize {
        self.disconnect_where(|e| e.key == fingerprint, reason)
            .await
    }

    /// Disconnects every session with `reason` (at shutdown); returns how many.
    pub async fn disconnect_all(&self, reason: &str) -> usize {
        self.disconnect_where(|_| true, reason).await
    }

    async fn disconnect_where(&self, pred: impl Fn(&Entry) -> bool, reason: &str) -> usize {
        let handles: Vec<Handle> = self
            .lock()
            .values()
            .filter(|e| pred(e))
            .map(|e| e.handle.clone())
            .collect();
        for h in &handles {
            let _ = h
                .disconnect(
                    russh::Disconnect::ByApplication,
                    reason.to_owned(),
                    String::new(),
                )
                .await;
        }
        handles.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

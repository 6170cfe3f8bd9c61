//! `ssh_auth_failures_per_minute_per_ip`: the SSH side of [`warren_admit::AuthFailures`].
//!
//! Each key the handler refuses (unknown, a disabled user's, or an unknown key that signed for
//! pairing but did not log in) counts once against the client's address. Past the limit the
//! address is refused for the rest of its minute: new connections at accept, before any key
//! exchange (server.rs), and further keys offered in a connection already open here, a
//! registered one included, so a scanner learns nothing more by guessing on.

use std::time::Duration;

use tracing::warn;
use warren_metrics::Limit;

use crate::handler::Connection;

/// What a refused client is told (after `Warren: `), with the wait until its window ends.
pub(crate) fn message(wait: Duration) -> String {
    format!(
        "too many failed authentications from your address (ssh_auth_failures_per_minute_per_ip); try again in {} s",
        wait.as_secs().max(1)
    )
}

impl Connection {
    /// Counts a refused key against the client's address; logs the moment it crosses the limit.
    pub(crate) fn auth_failed(&self) {
        if self.server.auth_failures.failed(self.peer.ip()) {
            warn!(
                peer = %self.peer,
                limit = Limit::SshAuthFailures.as_str(),
                max = self.server.auth_failures.max(),
                "address refused for the rest of its minute: too many failed authentications"
            );
        }
    }

    /// What the client is told if its address is refused now.
    pub(crate) fn penalty(&self) -> Option<String> {
        let wait = self.server.auth_failures.blocked(self.peer.ip())?;
        Some(format!("Warren: {}", message(wait)))
    }

    /// Whether a key offered now is refused for the address's failures; if so, counted, and
    /// `refusal` says why (keyboard-interactive shows it).
    pub(crate) fn penalised(&mut self) -> bool {
        let Some(why) = self.penalty() else {
            return false;
        };
        self.server.metrics.limit_hit(Limit::SshAuthFailures);
        self.refusal = Some(why);
        true
    }
}

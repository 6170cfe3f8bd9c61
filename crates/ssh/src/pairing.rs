//! Device pairing, the SSH side: an unknown key that proves itself gets a code and a link, may
//! ask for forwards while it waits, and has them bound in the same connection the moment a
//! signed-in user approves (see `warren_tenants::pairing` for the other side).
//!
//! The code travels in keyboard-interactive instructions, the one text OpenSSH shows an
//! `ssh -N` user, and only after a verified signature: whoever has just the public key gets
//! nothing. The connection is then let in with no user. Its forward requests are answered at
//! once (with the port it will be reached by) and recorded, so the client neither waits nor
//! gives up; the approval wakes a task on the session's thread that binds them. Nothing in the
//! session loop waits for the decision: keepalives, both ways, go on as in any session.

use std::sync::Arc;

use russh::keys::{HashAlg, PublicKey};
use russh::server::Handle;
use tokio::sync::oneshot;
use tracing::{Instrument, info, info_span};
use warren_store::{NewKey, User};
use warren_tenants::pairing::{CODE_LIFETIME, Decision, Pairings};

use crate::ask::{Ask, classify};
use crate::grant::display_addr;
use crate::handler::Connection;
use crate::server::SshServer;
use crate::tunnels::{Tunnels, Waiting};

/// Where a connection's unknown key stands.
#[derive(Default)]
pub(crate) enum Pairing {
    /// No unknown key has proven itself (or pairing is off).
    #[default]
    None,
    /// An unknown key signed; a code is issued if the client falls back to keyboard-interactive.
    Candidate(NewKey),
    /// A code is out; `decision` is taken by the task that waits on it.
    Waiting {
        code: String,
        link: String,
        decision: Option<oneshot::Receiver<Decision>>,
    },
    /// No code (the address asked for too many): `refusal` says why.
    Refused,
}

impl Pairing {
    pub(crate) fn is_waiting(&self) -> bool {
        matches!(self, Pairing::Waiting { .. })
    }

    /// The line a session channel shows while the key waits.
    pub(crate) fn waiting_line(&self) -> Option<String> {
        match self {
            Pairing::Waiting { code, link, .. } => Some(format!(
                "Warren: waiting for approval of code {code} at {link}"
            )),
            _ => None,
        }
    }

    /// The connection ended: its code is void.
    pub(crate) fn forget(&self, server: &SshServer) {
        if let (Pairing::Waiting { code, .. }, Some(p)) = (self, pairings(server)) {
            p.forget(code);
        }
    }
}

fn pairings(server: &SshServer) -> Option<&Arc<Pairings>> {
    server.tenants.as_ref()?.pairings.as_ref()
}

impl Connection {
    /// Whether an unknown key may still become this connection's pairing.
    pub(crate) fn may_pair(&self) -> bool {
        matches!(self.pairing, Pairing::None) && pairings(&self.server).is_some()
    }

    /// What the store will keep of `key` if it is approved; `None` for a key that cannot be
    /// written back in OpenSSH form (it could never be stored whole).
    pub(crate) fn candidate(&self, key: &PublicKey) -> Option<NewKey> {
        let mut key = key.clone();
        key.set_comment("");
        Some(NewKey {
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            algorithm: key.algorithm().as_str().to_owned(),
            public_key: key.to_openssh().ok()?.trim().to_owned(),
            comment: format!("paired from {}", self.peer.ip()),
        })
    }

    /// Issues a code for the key that signed, if one did: the instructions that show it.
    pub(crate) fn offer_code(&mut self) -> Option<String> {
        let Pairing::Candidate(key) = std::mem::take(&mut self.pairing) else {
            return None;
        };
        let pairings = pairings(&self.server)?;
        let fp = key.fingerprint.clone();
        match pairings.issue(key, self.peer.ip()) {
            Ok(ticket) => {
                info!(key = %fp, code = %ticket.code, "pairing code issued");
                let text = format!(
                    "Warren: key {fp} is not registered yet. To add it to your account, open\n  \
                     {}\nand approve code {} within {} minutes; your forwards come up in this \
                     session then.",
                    ticket.link,
                    ticket.code,
                    CODE_LIFETIME.as_secs() / 60
                );
                self.tunnels.lock().key = Some(fp);
                self.pairing = Pairing::Waiting {
                    code: ticket.code,
                    link: ticket.link,
                    decision: Some(ticket.decision),
                };
                Some(text)
            }
            Err(e) => {
                self.refusal = Some(format!("Warren: {e}"));
                self.pairing = Pairing::Refused;
                None
            }
        }
    }

    /// Starts the task that waits for the decision (the client is in, with no user).
    pub(crate) fn start_waiting(&mut self, handle: Handle) {
        let Pairing::Waiting { code, decision, .. } = &mut self.pairing else {
            return;
        };
        let Some(decision) = decision.take() else {
            return;
        };
        let Some(pairings) = pairings(&self.server).cloned() else {
            return;
        };
        // In, as far as the startup limits go; the per-address limit on codes bounds how many
        // such connections one address holds.
        self.startup.authenticated();
        let span = info_span!("pairing", code = %code);
        tokio::spawn(
            wait(
                self.tunnels.clone(),
                handle,
                code.clone(),
                decision,
                pairings,
            )
            .instrument(span),
        );
    }

    /// Records `-R address:port` for binding on approval, answering with the port it will be
    /// reached by: `Some(false)` refuses it (a repeat, or too many), `None` says the key has an
    /// owner by now (bind it the usual way).
    pub(crate) fn wait_forward(&self, address: &str, port: &mut u32) -> Option<bool> {
        let Pairing::Waiting { code, .. } = &self.pairing else {
            return Some(false);
        };
        let settings = &self.server.settings;
        let shown = describe(
            address,
            *port,
            &settings.urls.domain,
            settings.tls_passthrough,
        );
        let mut s = self.tunnels.lock();
        if s.user.is_some() {
            return None;
        }
        let clash = s
            .waiting
            .iter()
            .any(|w| *port != 0 && w.address == address && w.asked == *port);
        if clash || s.waiting.len() >= settings.limits.forwards_per_session {
            return Some(false);
        }
        let reply = if *port == 0 {
            s.next_port += 1;
            s.next_port - 1
        } else {
            *port
        };
        s.waiting.push(Waiting {
            address: address.to_owned(),
            asked: *port,
            reply,
            shown: shown.clone(),
        });
        drop(s);
        if let Some(p) = pairings(&self.server) {
            p.add_forward(code, shown);
        }
        *port = reply;
        Some(true)
    }

    /// Drops a waiting forward the client cancelled.
    pub(crate) fn cancel_waiting(&self, address: &str, port: u32) -> bool {
        let Pairing::Waiting { code, .. } = &self.pairing else {
            return false;
        };
        let gone = {
            let mut s = self.tunnels.lock();
            let i = s
                .waiting
                .iter()
                .position(|w| w.address == address && w.reply == port);
            i.map(|i| s.waiting.remove(i))
        };
        match (gone, pairings(&self.server)) {
            (Some(w), Some(p)) => {
                p.remove_forward(code, &w.shown);
                true
            }
            (gone, _) => gone.is_some(),
        }
    }
}

/// `-R address:port` as the approver reads it: `chat:80`, `localhost:0 (random name)`.
fn describe(address: &str, port: u32, domain: &str, passthrough: bool) -> String {
    let asked = format!("{}:{port}", display_addr(address));
    match classify(address, port, domain, passthrough) {
        Ask::Named(label, _) => format!("{label}:{port}"),
        Ask::Random => format!("{asked} (random name)"),
        Ask::Tcp(Some(p)) => format!("tcp:{p} (TCP port)"),
        Ask::Tcp(None) => "tcp:0 (any TCP port)".into(),
        Ask::Refuse(_) => format!("{asked} (not servable)"),
    }
}

/// Waits for the decision on `code`, then binds the waiting forwards (approved) or says why
/// and closes the connection.
async fn wait(
    tunnels: Tunnels,
    handle: Handle,
    code: String,
    decision: oneshot::Receiver<Decision>,
    pairings: Arc<Pairings>,
) {
    let bye = match tokio::time::timeout(CODE_LIFETIME, decision).await {
        Ok(Ok(Decision::Approved { user, by })) => {
            approved(&tunnels, handle, user, &by).await;
            return;
        }
        Ok(Ok(Decision::Rejected { by })) => format!("pairing rejected by {by}"),
        Ok(Ok(Decision::Failed(why))) => why,
        // Expired (or the connection ended and dropped the code: then nobody is left to tell).
        Ok(Err(_)) | Err(_) => {
            pairings.forget(&code);
            if tunnels.lock().closed {
                return;
            }
            "the pairing code expired; reconnect for a new one".into()
        }
    };
    info!(outcome = %bye, "pairing ended");
    tunnels.console.line(format!("Warren: {bye}"));
    let _ = handle
        .disconnect(
            russh::Disconnect::ByApplication,
            format!("Warren: {bye}"),
            String::new(),
        )
        .await;
}

/// The key now belongs to `user`: the connection becomes theirs and its waiting forwards are
/// granted and bound as if just asked for (each may still be refused, with the usual reason).
async fn approved(tunnels: &Tunnels, handle: Handle, user: User, by: &str) {
    let server = &tunnels.server;
    let waiting = {
        let mut s = tunnels.lock();
        if s.closed {
            return;
        }
        s.user = Some(user.clone());
        let key = s.key.clone().unwrap_or_default();
        // Under the state lock, so that a connection ending now cannot miss the entry.
        server.sessions.insert(
            tunnels.id,
            user.id,
            key,
            handle.clone(),
            tunnels.console.clone(),
        );
        std::mem::take(&mut s.waiting)
    };
    server.metrics.ssh_logins.increment(1);
    info!(user = %user.name, %by, forwards = waiting.len(), "key paired");
    tunnels.console.line(format!(
        "Warren: pairing approved by {by}; this key now belongs to {}.",
        user.name
    ));
    for w in waiting {
        let mut port = w.reply;
        let bound = match tunnels.grant(&user, &w.address, w.asked).await {
            Ok(grant) => {
                let grant = grant.answered(w.reply);
                tunnels
                    .bind(&user, &w.address, &mut port, grant, handle.clone())
                    .await
            }
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = bound {
            tunnels.refuse(&w.address, w.asked, refusal).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_read_as_asked() {
        let d = |a, p| describe(a, p, "example.com", true);
        assert_eq!(d("chat", 80), "chat:80");
        assert_eq!(d("chat.example.com", 443), "chat:443");
        assert_eq!(d("localhost", 0), "localhost:0 (random name)");
        assert_eq!(d("", 80), "*:80 (random name)");
        assert_eq!(d("tcp", 0), "tcp:0 (any TCP port)");
        assert_eq!(d("localhost", 22), "localhost:22 (not servable)");
    }
}

//! One SSH connection: authentication, forward requests, and the session channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use russh::keys::HashAlg;
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tracing::{debug, info, warn};
use warren_registry::{BindError, RouteKind, SessionId, StickyKey, names, tcp_name};
use warren_store::{AuditEvent, StoreError, User};

use crate::console::Console;
use crate::endpoint::SshEndpoint;
use crate::server::SshServer;

/// Fake "allocated ports" for `-R 0:` forwards start here. Nothing listens on them: OpenSSH only
/// needs a distinct non-zero number per forward to match our channels to its forwards.
const FIRST_ALLOCATED_PORT: u32 = 40000;

/// A forward this connection holds.
struct Forward {
    name: String,
    sticky: Option<StickyKey>,
}

/// What a `tcpip-forward` request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    Random,
    Named(String, RouteKind),
    /// `-R tcp:PORT:…`: a raw TCP tunnel on a public port (0: any port of the range).
    Tcp(Option<u16>),
    Refuse(String),
}

/// Maps OpenSSH's `-R [bind_address:]port:…` onto what Warren serves: port 80 (or 0) is HTTP,
/// 443 a TLS passthrough (when the broker has an HTTPS listener).
fn classify(address: &str, port: u32, domain: &str, passthrough: bool) -> Ask {
    if address == "tcp" {
        return match u16::try_from(port) {
            Ok(0) => Ask::Tcp(None),
            Ok(p) => Ask::Tcp(Some(p)),
            Err(_) => Ask::Refuse(format!("port {port} is not a TCP port")),
        };
    }
    let wildcard = matches!(
        address,
        "" | "localhost" | "0.0.0.0" | "127.0.0.1" | "::" | "::1" | "*"
    );
    match (wildcard, port) {
        (true, 0 | 80) => Ask::Random,
        (true, p) => Ask::Refuse(format!(
            "port {p}: this broker serves HTTP tunnels; use -R 0:localhost:PORT for a random name \
             or -R NAME:80:localhost:PORT for a named one"
        )),
        (false, 0 | 80 | 443) => {
            let lower = address.trim_end_matches('.');
            let label = lower
                .strip_suffix(&format!(".{domain}"))
                .unwrap_or(lower)
                .to_owned();
            match port {
                443 if passthrough => Ask::Named(label, RouteKind::TlsPassthrough),
                443 => Ask::Refuse(format!(
                    "{address}:443: TLS passthrough needs the broker's HTTPS listener, which is off"
                )),
                _ => Ask::Named(label, RouteKind::Http),
            }
        }
        (false, p) => Ask::Refuse(format!(
            "{address}:{p}: named tunnels use port 80 (-R {address}:80:localhost:PORT)"
        )),
    }
}

pub(crate) struct Connection {
    server: Arc<SshServer>,
    id: SessionId,
    peer: SocketAddr,
    authed: Arc<AtomicBool>,
    user: Option<User>,
    key: Option<String>,
    /// Why publickey auth failed, told via keyboard-interactive (the only way OpenSSH shows
    /// server text after the banner).
    refusal: Option<String>,
    console: Console,
    forwards: HashMap<(String, u32), Forward>,
    /// The client's session channel, the only one whose input we interpret.
    session_channel: Option<ChannelId>,
    random_count: u32,
    tcp_count: u32,
    next_port: u32,
}

impl Connection {
    pub(crate) fn new(
        server: Arc<SshServer>,
        id: SessionId,
        peer: SocketAddr,
        authed: Arc<AtomicBool>,
    ) -> Self {
        Self {
            server,
            id,
            peer,
            authed,
            user: None,
            key: None,
            refusal: None,
            console: Console::spawn(),
            forwards: HashMap::new(),
            session_channel: None,
            random_count: 0,
            tcp_count: 0,
            next_port: FIRST_ALLOCATED_PORT,
        }
    }

    /// Looks up an offered key; `Ok(None)` with `self.refusal` set when it may not log in.
    async fn check_key(&mut self, key: &russh::keys::PublicKey) -> Option<User> {
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        match self.server.store.key_by_fingerprint(&fp).await {
            Ok(Some((_, user))) if !user.disabled => Some(user),
            Ok(Some((_, user))) => {
                self.refusal = Some(format!(
                    "Warren: user {:?} is disabled; ask the operator.",
                    user.name
                ));
                None
            }
            Ok(None) => {
                self.refusal = Some(format!(
                    "Warren: key {fp} is not registered. Ask the operator to run: broker key add USER <your .pub file>"
                ));
                None
            }
            Err(e) => {
                warn!(error = %e, "key lookup failed");
                self.refusal = Some(
                    "Warren: the broker cannot check keys right now; try again shortly.".into(),
                );
                None
            }
        }
    }

    fn actor(&self) -> String {
        match &self.user {
            Some(u) => format!("ssh:{}", u.name),
            None => "ssh".into(),
        }
    }

    async fn audit(&self, action: &str, subject: &str, detail: String) {
        let mut e = AuditEvent::new(
            &self.actor(),
            action,
            subject,
            self.user.as_ref().map(|u| u.id),
        );
        e.detail = detail;
        if let Err(err) = self.server.store.record(&e).await {
            warn!(error = %err, "audit write failed");
        }
    }

    /// Picks a free random name, preferring the one this forward had before.
    async fn random_name(&self, user: &User, sticky: &StickyKey) -> Result<String, String> {
        let reg = &self.server.registry;
        if let Some(name) = reg.sticky(sticky)
            && reg.is_free_for(&name, user.id)
        {
            return Ok(name);
        }
        for _ in 0..32 {
            let name = names::random();
            if !reg.is_free_for(&name, -1) {
                continue;
            }
            match self.server.store.reservation(&name).await {
                Ok(None) => return Ok(name),
                Ok(Some(_)) => continue,
                Err(e) => {
                    warn!(error = %e, "reservation lookup failed");
                    return Err("the broker cannot reach its database; try again shortly".into());
                }
            }
        }
        Err("no free random name found; try again".into())
    }

    /// May `user` bind the named `label`? Claims it when free and auto-claim is on.
    async fn authorize_name(&self, user: &User, label: &str) -> Result<(), String> {
        names::validate(label).map_err(|e| e.to_string())?;
        let store = &self.server.store;
        match store.reservation(label).await {
            Ok(Some(r)) if r.user_id == user.id => {
                self.server.registry.mark_reserved(label);
                Ok(())
            }
            Ok(Some(_)) => Err(format!("name {label:?} is reserved by another user")),
            Ok(None) if self.server.settings.auto_claim => {
                match store.reserve(&self.actor(), &user.name, label).await {
                    Ok(_) => {
                        self.server.registry.mark_reserved(label);
                        self.console
                            .line(format!("claimed the name {label:?} for {}", user.name));
                        Ok(())
                    }
                    Err(StoreError::NameTaken { .. }) => {
                        Err(format!("name {label:?} is reserved by another user"))
                    }
                    Err(e) => {
                        warn!(error = %e, "claim failed");
                        Err("the broker cannot reach its database; try again shortly".into())
                    }
                }
            }
            Ok(None) => Err(format!(
                "name {label:?} is not reserved for you; ask the operator: broker reserve {} {label}",
                user.name
            )),
            Err(e) => {
                warn!(error = %e, "reservation lookup failed");
                Err("the broker cannot reach its database; try again shortly".into())
            }
        }
    }
}

impl Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.check_key(offer.public_key).await {
            Some(_) => Auth::Accept,
            None => Auth::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.check_key(key.public_key).await {
            Some(user) => {
                let fp = key.public_key.fingerprint(HashAlg::Sha256).to_string();
                info!(user = %user.name, key = %fp, "authenticated");
                self.user = Some(user);
                self.key = Some(fp);
                Ok(Auth::Accept)
            }
            None => Ok(Auth::reject()),
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if response.is_some() {
            // Said once; take keyboard-interactive off the table so OpenSSH does not ask again
            // (it would retry NumberOfPasswordPrompts times).
            return Ok(Auth::Reject {
                proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
                partial_success: false,
            });
        }
        let text = self.refusal.clone().unwrap_or_else(|| {
            "Warren: log in with an SSH key registered by the operator (broker key add USER <your .pub file>).".into()
        });
        // Zero prompts: OpenSSH prints the instruction and answers at once, no tty needed.
        Ok(Auth::Partial {
            name: "".into(),
            instructions: text.into(),
            prompts: Vec::new().into(),
        })
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let (Some(user), Some(key)) = (&self.user, &self.key) {
            self.authed.store(true, Ordering::Relaxed);
            self.server
                .sessions
                .insert(self.id, user.id, key.clone(), session.handle());
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.session_channel.is_some() {
            // One terminal per connection is plenty.
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        reply.accept().await;
        self.session_channel = Some(channel.id());
        self.console.attach(channel.id(), session.handle());
        if self.forwards.is_empty() {
            self.console.line(
                "Warren: no tunnels requested. Try: ssh -R 0:localhost:8080 … (random name) or -R NAME:80:localhost:8080",
            );
        }
        self.console.line("Press Ctrl-C to close your tunnels.");
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // No commands are run; the channel just shows the tunnel log.
        session.channel_success(channel)
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Ctrl-C or Ctrl-D typed in the session: end it, and with it the tunnels. (This
        // callback also sees every byte of visitor traffic on forwarded channels: those are
        // not ours to interpret.)
        if Some(channel) == self.session_channel && (data.contains(&3) || data.contains(&4)) {
            session.data(channel, &b"Closing your tunnels. Bye.\r\n"[..])?;
            session.exit_status_request(channel, 0)?;
            session.eof(channel)?;
            session.close(channel)?;
        }
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(user) = self.user.clone() else {
            return Ok(false);
        };
        let settings = &self.server.settings;
        let ask = classify(address, *port, &settings.domain, settings.tls_passthrough);
        let (name, sticky, kind) = match ask {
            Ask::Refuse(why) => {
                self.console
                    .line(format!("refused -R {address}:{port}: {why}"));
                return Ok(false);
            }
            Ask::Random => {
                let sticky = StickyKey {
                    key: self.key.clone().unwrap_or_default(),
                    address: address.to_owned(),
                    ordinal: self.random_count,
                };
                match self.random_name(&user, &sticky).await {
                    Ok(n) => {
                        self.random_count += 1;
                        (n, Some(sticky), RouteKind::Http)
                    }
                    Err(why) => {
                        self.console
                            .line(format!("refused -R {address}:{port}: {why}"));
                        return Ok(false);
                    }
                }
            }
            Ask::Tcp(preferred) => match self.tcp_port(preferred) {
                Ok((port_name, sticky)) => {
                    if *port == 0 {
                        *port = u32::from(port_name.1);
                    }
                    (port_name.0, Some(sticky), RouteKind::Tcp)
                }
                Err(why) => {
                    self.console
                        .line(format!("refused -R {address}:{port}: {why}"));
                    return Ok(false);
                }
            },
            Ask::Named(label, kind) => match self.authorize_name(&user, &label).await {
                Ok(()) => (label, None, kind),
                Err(why) => {
                    self.console
                        .line(format!("refused -R {address}:{port}: {why}"));
                    self.audit("tunnel.refuse", &label, why).await;
                    return Ok(false);
                }
            },
        };
        if *port == 0 {
            *port = self.next_port;
            self.next_port += 1;
        }
        let endpoint = Arc::new(SshEndpoint {
            handle: session.handle(),
            address: address.to_owned(),
            port: *port,
            console: self.console.clone(),
            shard: warren_shards::Shards::current(),
        });
        match self
            .server
            .registry
            .bind(&name, user.id, self.id, kind, endpoint)
        {
            Ok((_, displaced)) => {
                if let Some(old) = displaced {
                    old.endpoint
                        .notify(format!("{name} was taken over by a newer session of yours"));
                }
                if let Some(key) = &sticky {
                    self.server.registry.remember(key.clone(), &name);
                }
                let url = match kind {
                    RouteKind::Http => self.server.settings.url_for(&name),
                    RouteKind::TlsPassthrough => self.server.settings.tls_url_for(&name),
                    RouteKind::Tcp => format!(
                        "tcp://{}:{}",
                        self.server
                            .tcp_ports
                            .as_ref()
                            .map(|p| p.public_host())
                            .unwrap_or_default(),
                        name.trim_start_matches("tcp:")
                    ),
                };
                info!(%name, user = %user.name, "tunnel bound");
                self.console.line(format!(
                    "{url} -> forward {}:{}",
                    display_addr(address),
                    port
                ));
                self.forwards.insert(
                    (address.to_owned(), *port),
                    Forward {
                        name: name.clone(),
                        sticky,
                    },
                );
                self.audit("tunnel.bind", &name, format!("{address}:{port}"))
                    .await;
                Ok(true)
            }
            Err(BindError::Taken(_)) => {
                self.console.line(format!(
                    "refused -R {address}:{port}: name {name:?} is in use by another user"
                ));
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(fwd) = self.forwards.remove(&(address.to_owned(), port)) else {
            return Ok(false);
        };
        self.release(&fwd);
        self.console.line(format!(
            "closed {}",
            self.server.settings.url_for(&fwd.name)
        ));
        self.audit("tunnel.unbind", &fwd.name, String::new()).await;
        Ok(true)
    }
}

impl Connection {
    /// A public TCP port for `-R tcp:…`: the one asked for, else the one this forward had
    /// before (within the grace period), else any free one.
    fn tcp_port(&mut self, preferred: Option<u16>) -> Result<((String, u16), StickyKey), String> {
        let ports = self
            .server
            .tcp_ports
            .clone()
            .ok_or("raw TCP tunnels are not enabled on this broker")?;
        let sticky = StickyKey {
            key: self.key.clone().unwrap_or_default(),
            address: "tcp".into(),
            ordinal: self.tcp_count,
        };
        let remembered = self
            .server
            .registry
            .sticky(&sticky)
            .and_then(|n| n.trim_start_matches("tcp:").parse::<u16>().ok());
        let port = match (preferred, remembered) {
            (Some(p), _) => ports.allocate(Some(p))?,
            (None, Some(p)) => ports.allocate(Some(p)).or_else(|_| ports.allocate(None))?,
            (None, None) => ports.allocate(None)?,
        };
        self.tcp_count += 1;
        Ok(((tcp_name(port), port), sticky))
    }

    fn release(&self, fwd: &Forward) {
        self.server.registry.unbind(&fwd.name, self.id);
        if let Some(key) = &fwd.sticky {
            // Restart the stickiness clock from the moment the forward went away.
            self.server.registry.remember(key.clone(), &fwd.name);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for fwd in self.forwards.values() {
            self.release(fwd);
        }
        if !self.forwards.is_empty() {
            debug!(n = self.forwards.len(), peer = %self.peer, "session ended, names parked");
            // Record the unbinds; Drop cannot await, so the writes go to a task.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let store = self.server.store.clone();
                let actor = self.actor();
                let user_id = self.user.as_ref().map(|u| u.id);
                let names: Vec<String> = self.forwards.values().map(|f| f.name.clone()).collect();
                rt.spawn(async move {
                    for name in names {
                        let mut e = AuditEvent::new(&actor, "tunnel.unbind", &name, user_id);
                        e.detail = "session ended".into();
                        let _ = store.record(&e).await;
                    }
                });
            }
        }
        self.server.sessions.remove(self.id);
    }
}

fn display_addr(address: &str) -> &str {
    if address.is_empty() { "*" } else { address }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_openssh_requests() {
        let http = |n: &str| Ask::Named(n.into(), RouteKind::Http);
        let c = |a: &str, p: u32| classify(a, p, "example.com", true);
        assert_eq!(c("localhost", 0), Ask::Random);
        assert_eq!(c("", 0), Ask::Random);
        assert_eq!(c("localhost", 80), Ask::Random);
        assert_eq!(c("chat", 80), http("chat"));
        assert_eq!(c("chat.example.com", 80), http("chat"));
        assert_eq!(c("chat", 0), http("chat"));
        assert_eq!(
            c("chat", 443),
            Ask::Named("chat".into(), RouteKind::TlsPassthrough)
        );
        assert!(matches!(
            classify("chat", 443, "example.com", false),
            Ask::Refuse(_)
        ));
        assert!(matches!(c("chat", 8080), Ask::Refuse(_)));
        assert!(matches!(c("localhost", 22), Ask::Refuse(_)));
        assert_eq!(c("tcp", 0), Ask::Tcp(None));
        assert_eq!(c("tcp", 40100), Ask::Tcp(Some(40100)));
    }
}

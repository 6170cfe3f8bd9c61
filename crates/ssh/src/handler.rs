//! One SSH connection: authentication, forward requests, and the session channel.

use std::net::SocketAddr;
use std::sync::Arc;

use russh::keys::HashAlg;
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tracing::{debug, info, warn};
use warren_metrics::AuthFailure;
use warren_registry::{SessionId, StickyKey};
use warren_store::{AuditAction, AuditEvent, User};

use warren_tenants::{Caller, Scope, Via};

use crate::commands;
use crate::console::Console;
use crate::pairing::Pairing;
use crate::server::SshServer;
use crate::startup::Startup;
use crate::tunnels::Tunnels;

/// What the store says of an offered key.
enum KeyCheck {
    /// Registered to a user who may log in.
    Ok(User),
    /// Registered to a disabled user. Said only once the client has proven it holds the key:
    /// whoever has only the public key must not learn whose it is.
    Disabled(User),
    /// Not registered: `refusal` is set (it may still pair, see [`Pairing`]).
    Unknown,
    /// The store could not say: `refusal` is set.
    Refused,
}

/// One SSH connection's state; russh calls its [`Handler`] methods one at a time.
pub(crate) struct Connection {
    pub(crate) server: Arc<SshServer>,
    pub(crate) id: SessionId,
    pub(crate) peer: SocketAddr,
    pub(crate) startup: Arc<Startup>,
    /// Why publickey auth failed, told via keyboard-interactive (the only way OpenSSH shows
    /// server text after the banner).
    pub(crate) refusal: Option<String>,
    pub(crate) console: Console,
    /// The user, the key and the forwards (shared with a pairing's approval).
    pub(crate) tunnels: Tunnels,
    /// An unknown key on its way to an owner.
    pub(crate) pairing: Pairing,
    /// The client's session channel, the only one whose input we interpret.
    session_channel: Option<ChannelId>,
    /// A command waiting for its stdin to end (`keys add`): channel, words, input so far.
    pending: Option<(ChannelId, Vec<String>, Vec<u8>)>,
}

impl Connection {
    pub(crate) fn new(
        server: Arc<SshServer>,
        id: SessionId,
        peer: SocketAddr,
        startup: Arc<Startup>,
    ) -> Self {
        let console = Console::spawn();
        Self {
            tunnels: Tunnels::new(server.clone(), id, console.clone()),
            server,
            id,
            peer,
            startup,
            refusal: None,
            console,
            pairing: Pairing::None,
            session_channel: None,
            pending: None,
        }
    }

    /// Runs a command on its own task and sends its output, exit status, EOF and close.
    fn run_command(
        &self,
        channel: ChannelId,
        args: Vec<String>,
        stdin: Vec<u8>,
        session: &Session,
    ) {
        let (Some(tenants), Some(user)) = (self.server.tenants.clone(), self.tunnels.user()) else {
            return;
        };
        let scope = if user.is_admin {
            Scope::Admin
        } else {
            Scope::Write
        };
        let caller = Caller::new(user, scope, Via::Ssh);
        let handle = session.handle();
        tokio::spawn(async move {
            let out = commands::run(&tenants, &caller, &args, &stdin).await;
            let crlf = |s: String| s.replace('\n', "\r\n").into_bytes();
            if !out.stdout.is_empty() {
                let _ = handle.data(channel, crlf(out.stdout)).await;
            }
            if !out.stderr.is_empty() {
                let _ = handle.extended_data(channel, 1, crlf(out.stderr)).await;
            }
            let _ = handle.exit_status_request(channel, out.code).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
    }

    /// Looks up an offered key. On [`KeyCheck::Unknown`] and [`KeyCheck::Refused`],
    /// `self.refusal` says why.
    async fn check_key(&mut self, key: &russh::keys::PublicKey) -> KeyCheck {
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        match self.server.store.key_by_fingerprint(&fp).await {
            Ok(Some((_, user))) if !user.disabled => KeyCheck::Ok(user),
            Ok(Some((_, user))) => KeyCheck::Disabled(user),
            Ok(None) => {
                // Counted by the caller: a key that may pair has not failed (yet).
                self.refusal = Some(format!(
                    "Warren: key {fp} is not registered. Ask the operator to run: broker key add USER <your .pub file>"
                ));
                KeyCheck::Unknown
            }
            Err(e) => {
                warn!(error = %e, "key lookup failed");
                self.server.metrics.auth_failure(AuthFailure::StoreError);
                self.refusal = Some(
                    "Warren: the broker cannot check keys right now; try again shortly.".into(),
                );
                KeyCheck::Refused
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
        // Boxed: the session task holds the largest of its handler calls inline for
        // its whole life, idle or not (see ARCHITECTURE, "memory per tunnel").
        Box::pin(async move {
            if self.penalised() {
                return Ok(Auth::reject());
            }
            // A disabled user's key is accepted here so that the client proves it holds the
            // key; only then is it told why it may not log in (`auth_publickey`).
            Ok(match self.check_key(offer.public_key).await {
                KeyCheck::Ok(_) | KeyCheck::Disabled(_) => Auth::Accept,
                // An unknown key may pair, once it has proven it holds the private half: ask for
                // the signature (`auth_publickey` decides).
                KeyCheck::Unknown if self.may_pair() => Auth::Accept,
                KeyCheck::Unknown => {
                    self.server.metrics.auth_failure(AuthFailure::UnknownKey);
                    self.auth_failed();
                    Auth::reject()
                }
                KeyCheck::Refused => Auth::reject(),
            })
        })
        .await
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        // Boxed: the session task holds the largest of its handler calls inline for
        // its whole life, idle or not (see ARCHITECTURE, "memory per tunnel").
        Box::pin(async move {
            if self.penalised() {
                return Ok(Auth::reject());
            }
            match self.check_key(key.public_key).await {
                KeyCheck::Ok(user) => {
                    let fp = key.public_key.fingerprint(HashAlg::Sha256).to_string();
                    info!(user = %user.name, key = %fp, peer = %self.peer, "authenticated");
                    let mut s = self.tunnels.lock();
                    s.user = Some(user);
                    s.key = Some(fp);
                    Ok(Auth::Accept)
                }
                KeyCheck::Disabled(user) => {
                    self.server.metrics.auth_failure(AuthFailure::DisabledUser);
                    self.auth_failed();
                    self.refusal = Some(format!(
                        "Warren: user {:?} is disabled; ask the operator.",
                        user.name
                    ));
                    Ok(Auth::reject())
                }
                KeyCheck::Unknown if self.may_pair() => {
                    // Rejected for now, so that a client holding a registered key as well goes on
                    // to offer it; if it runs out, keyboard-interactive shows the pairing code.
                    // It counts as a failure against the address all the same: otherwise a scanner
                    // would guess one key per connection for free.
                    self.auth_failed();
                    if let Some(candidate) = self.candidate(key.public_key) {
                        self.pairing = Pairing::Candidate(candidate);
                    }
                    Ok(Auth::reject())
                }
                KeyCheck::Unknown => {
                    self.server.metrics.auth_failure(AuthFailure::UnknownKey);
                    self.auth_failed();
                    Ok(Auth::reject())
                }
                KeyCheck::Refused => Ok(Auth::reject()),
            }
        })
        .await
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if response.is_some() && self.pairing.is_waiting() {
            // The code is shown: the connection may go on, with no user until an approval.
            return Ok(Auth::Accept);
        }
        if response.is_some() {
            // Said once; take keyboard-interactive off the table so OpenSSH does not ask again
            // (it would retry NumberOfPasswordPrompts times).
            return Ok(Auth::Reject {
                proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
                partial_success: false,
            });
        }
        // An address past `ssh_auth_failures_per_minute_per_ip` is told so (the client whose
        // refused key crossed the line included), and gets no pairing code.
        if let Some(why) = self.penalty() {
            self.refusal = Some(why);
        } else if let Some(text) = self.offer_code() {
            return Ok(Auth::Partial {
                name: "".into(),
                instructions: text.into(),
                prompts: Vec::new().into(),
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
        let (user, key) = {
            let s = self.tunnels.lock();
            (s.user.clone(), s.key.clone())
        };
        if let (Some(user), Some(key)) = (user, key) {
            self.startup.authenticated();
            // Its address may now use the startup places kept from strangers.
            self.server.admission.vouch(self.peer.ip());
            self.server.metrics.ssh_logins.increment(1);
            self.server.sessions.insert(
                self.id,
                user.id,
                key,
                session.handle(),
                self.console.clone(),
            );
        } else {
            self.start_waiting(session.handle());
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Boxed: the session task holds the largest of its handler calls inline for
        // its whole life, idle or not (see ARCHITECTURE, "memory per tunnel").
        Box::pin(async move {
            if self.session_channel.is_some() {
                // One terminal per connection is plenty.
                reply
                    .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return Ok(());
            }
            reply.accept().await;
            // The tunnel log attaches once the client asks for a shell: a command (exec) gets the
            // channel to itself.
            self.session_channel = Some(channel.id());
            let _ = session;
            Ok(())
        })
        .await
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
        session.channel_success(channel)?;
        if Some(channel) == self.session_channel {
            self.console.attach(channel, session.handle());
            let (user, no_forwards) = {
                let s = self.tunnels.lock();
                (s.user.is_some(), s.forwards.is_empty())
            };
            if let (false, Some(line)) = (user, self.pairing.waiting_line()) {
                self.console.line(line);
            } else if no_forwards {
                self.console.line(
                    "Warren: no tunnels requested. Try: ssh -R 0:localhost:8080 … (random name) or -R NAME:80:localhost:8080",
                );
                self.console
                    .line("Or run a command: ssh … help (your names, keys and tokens).");
            }
            self.console.line("Press Ctrl-C to close your tunnels.");
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Boxed: the session task holds the largest of its handler calls inline for
        // its whole life, idle or not (see ARCHITECTURE, "memory per tunnel").
        Box::pin(async move {
            if Some(channel) != self.session_channel || self.pending.is_some() {
                return session.channel_failure(channel);
            }
            let line =
                String::from_utf8_lossy(&data[..data.len().min(commands::MAX_INPUT)]).into_owned();
            let args = match commands::split(&line) {
                Ok(args) => args,
                Err(why) => vec!["--bad-command".into(), why],
            };
            if args.is_empty() || self.server.tenants.is_none() || self.tunnels.user().is_none() {
                // An empty command is a shell: show the tunnel log (and a key waiting on a
                // pairing may run nothing yet).
                return self.shell_request(channel, session).await;
            }
            session.channel_success(channel)?;
            info!(session = self.id, user = ?self.tunnels.user().map(|u| u.name), command = %args[0].chars().take(32).collect::<String>(), "ssh command");
            if commands::reads_stdin(&args) {
                self.pending = Some((channel, args, Vec::new()));
            } else {
                self.run_command(channel, args, Vec::new(), session);
            }
            Ok(())
        })
        .await
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((ch, args, input)) = self.pending.take_if(|(ch, _, _)| *ch == channel) {
            self.run_command(ch, args, input, session);
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((ch, _, input)) = &mut self.pending
            && *ch == channel
        {
            if input.len() + data.len() > commands::MAX_INPUT {
                // Too much input for a key list: run with what fits; the parse says what is wrong.
                let room = commands::MAX_INPUT.saturating_sub(input.len());
                input.extend_from_slice(&data[..room.min(data.len())]);
            } else {
                input.extend_from_slice(data);
            }
            return Ok(());
        }
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

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Every request that wants a reply gets one, or the client waits forever.
        session.channel_failure(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        debug!(subsystem = %name.chars().take(64).collect::<String>(), "subsystem refused");
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        _signal: russh::Sig,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Nothing to resize; a client that asked for a reply is told so.
        session.channel_failure(channel)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // Boxed: the session task holds the largest of its handler calls inline for
        // its whole life, idle or not (see ARCHITECTURE, "memory per tunnel").
        Box::pin(async move {
            let user = match self.tunnels.user() {
                Some(user) => user,
                // A key waiting on a pairing: the forward is recorded and bound on approval (unless
                // the approval landed just now).
                None => match self.wait_forward(address, port) {
                    Some(answer) => return Ok(answer),
                    None => match self.tunnels.user() {
                        Some(user) => user,
                        None => return Ok(false),
                    },
                },
            };
            let asked = *port;
            let t = &self.tunnels;
            let granted = match t.grant(&user, address, asked).await {
                Ok(grant) => t.bind(&user, address, port, grant, session.handle()).await,
                Err(refusal) => Err(refusal),
            };
            match granted {
                Ok(()) => Ok(true),
                Err(refusal) => {
                    t.refuse(address, asked, refusal).await;
                    Ok(false)
                }
            }
        })
        .await
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // Boxed: the session task holds the largest of its handler calls inline for
        // its whole life, idle or not (see ARCHITECTURE, "memory per tunnel").
        Box::pin(async move {
            let removed = self.tunnels.lock().forwards.remove(address, port);
            let Some(fwd) = removed else {
                return Ok(self.cancel_waiting(address, port));
            };
            self.tunnels.release(&fwd);
            self.console.line(format!(
                "closed {}",
                self.server.public_url(fwd.kind, &fwd.name)
            ));
            let detail = fwd
                .sticky
                .as_ref()
                .map(StickyKey::to_detail)
                .unwrap_or_default();
            self.tunnels
                .audit(AuditAction::TunnelUnbind, &fwd.name, detail)
                .await;
            Ok(true)
        })
        .await
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let gone = self.tunnels.close();
        self.pairing.forget(&self.server);
        for fwd in &gone {
            self.tunnels.release(fwd);
        }
        if !gone.is_empty() {
            debug!(n = gone.len(), peer = %self.peer, "session ended, names parked");
            // Record the unbinds; Drop cannot await, so the writes go to a task.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let store = self.server.store.clone();
                let actor = self.tunnels.actor();
                let user_id = self.tunnels.user().map(|u| u.id);
                let names: Vec<(String, Option<StickyKey>)> =
                    gone.into_iter().map(|f| (f.name, f.sticky)).collect();
                rt.spawn(async move {
                    for (name, sticky) in names {
                        let mut e =
                            AuditEvent::new(&actor, AuditAction::TunnelUnbind, &name, user_id);
                        e.detail = match sticky {
                            Some(key) => format!("session ended {}", key.to_detail()),
                            None => "session ended".into(),
                        };
                        let _ = store.record(&e).await;
                    }
                });
            }
        }
        self.server.sessions.remove(self.id);
    }
}

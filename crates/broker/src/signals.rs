//! The signals `serve` answers: SIGTERM and Ctrl-C stop it, SIGHUP reloads.
//!
//! The handlers are installed before anything binds and before systemd hears READY=1: until a
//! handler exists, SIGHUP's default action ends the process, and a `systemctl reload` (or
//! `kill -HUP`) sent the moment the broker said it was ready used to kill it with every tunnel.

/// What a signal asks of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Stop,
    Reload,
}

/// The installed handlers; `next` waits for the next signal.
pub struct Signals {
    #[cfg(unix)]
    handlers: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Installs the handlers now. Where they cannot be installed (no signal support), only
    /// Ctrl-C stops the broker, as before.
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let handlers = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(term), Ok(hup)) => Some((term, hup)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot handle SIGTERM/SIGHUP; only Ctrl-C stops the broker");
                    None
                }
            };
            Signals { handlers }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal; pending ones (sent before this was called) are not lost.
    pub async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some((term, hup)) = &mut self.handlers {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = term.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}

//! A connection's standing before and after login: whether it authenticated, and the places it
//! holds in the startup limits (`ssh_max_startups`, `ssh_max_startups_per_ip`) until then.
//!
//! The limits are for strangers: the moment a key is accepted the places are given back, so
//! an owner's session never counts against them however long it lives.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::OwnedSemaphorePermit;
use warren_admit::Ticket;

/// Shared by the handler (which sees the login) and the socket (whose auth deadline stops
/// applying).
#[derive(Debug, Default)]
pub(crate) struct Startup {
    authed: AtomicBool,
    ticket: Mutex<Option<Ticket>>,
    /// An exempt source's place among the handshakes in progress.
    turn: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Startup {
    pub(crate) fn new(ticket: Ticket) -> Self {
        Self {
            authed: AtomicBool::new(false),
            ticket: Mutex::new(Some(ticket)),
            turn: Mutex::new(None),
        }
    }

    /// Holds `turn` until the login, like the ticket's places.
    pub(crate) fn with_turn(self, turn: Option<OwnedSemaphorePermit>) -> Self {
        *self.turn.lock().unwrap_or_else(|p| p.into_inner()) = turn;
        self
    }

    /// The client logged in: the deadline no longer applies and its places are given back.
    pub(crate) fn authenticated(&self) {
        self.authed.store(true, Ordering::Relaxed);
        let ticket = self.ticket.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(ticket);
        let turn = self.turn.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(turn);
    }

    /// Whether the client has logged in (one relaxed load).
    pub(crate) fn is_authenticated(&self) -> bool {
        self.authed.load(Ordering::Relaxed)
    }
}

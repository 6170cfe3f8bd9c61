//! What an alert says: the event names and their JSON bodies.
//!
//! Every body has `event` and `at` (Unix seconds); the rest depends on the event. The body is
//! rendered once, when the event is queued, and stored: every attempt sends (and signs) the
//! same bytes.

use serde_json::{Value, json};

/// An event a webhook can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A tunnel came up (its first bind, or a bind after a `tunnel.down`).
    TunnelUp,
    /// A tunnel has been gone for `alert_down_after_secs`.
    TunnelDown,
    /// A certificate expires within the warning window (global hooks).
    CertExpiring,
    /// Ordering or renewing a certificate failed (global hooks).
    CertError,
    /// The DNS provider refused a change (global hooks).
    DnsError,
    /// A test delivery asked for by the hook's owner.
    Ping,
}

impl EventKind {
    /// The `event` field and the `X-Warren-Event` header.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TunnelUp => "tunnel.up",
            EventKind::TunnelDown => "tunnel.down",
            EventKind::CertExpiring => "cert.expiring",
            EventKind::CertError => "cert.error",
            EventKind::DnsError => "dns.error",
            EventKind::Ping => "ping",
        }
    }

    /// Whether only global hooks get it (it concerns the broker, not one tenant's tunnel).
    pub fn global_only(self) -> bool {
        matches!(
            self,
            EventKind::CertExpiring | EventKind::CertError | EventKind::DnsError
        )
    }
}

/// A live tunnel as alerts describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// The label, or `tcp:PORT`.
    pub name: String,
    /// `http`, `tls` or `tcp`.
    pub kind: String,
    /// Where visitors reach it.
    pub url: String,
    /// Its owner's user id (whose hooks get its events).
    pub owner: Option<i64>,
}

/// An event ready to queue: who gets it and the body they get.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// What happened.
    pub kind: EventKind,
    /// The tenant whose hooks get it besides the global ones (`None`: global hooks only).
    pub owner: Option<i64>,
    /// The JSON body.
    pub body: Value,
}

impl Alert {
    /// `tunnel.up` / `tunnel.down` of `t`, owned by the user named `user`. `down_since` is
    /// when a tunnel that is now reported down went away.
    pub fn tunnel(
        kind: EventKind,
        t: &Tunnel,
        user: &str,
        at: i64,
        down_since: Option<i64>,
    ) -> Self {
        let mut body = json!({
            "event": kind.as_str(),
            "at": at,
            "name": t.name,
            "kind": t.kind,
            "url": t.url,
            "user": user,
        });
        if let Some(since) = down_since {
            body["down_since"] = json!(since);
        }
        Self {
            kind,
            owner: t.owner,
            body,
        }
    }

    /// A certificate expiring within the warning window.
    pub fn cert_expiring(name: &str, not_after: i64, at: i64) -> Self {
        Self {
            kind: EventKind::CertExpiring,
            owner: None,
            body: json!({
                "event": EventKind::CertExpiring.as_str(),
                "at": at,
                "name": name,
                "not_after": not_after,
                "days_left": (not_after - at).max(0) / 86_400,
            }),
        }
    }

    /// A failed certificate order.
    pub fn cert_error(name: &str, error: &str, at: i64) -> Self {
        Self {
            kind: EventKind::CertError,
            owner: None,
            body: json!({
                "event": EventKind::CertError.as_str(),
                "at": at,
                "name": name,
                "error": error,
            }),
        }
    }

    /// A DNS change the provider refused.
    pub fn dns_error(name: &str, error: &str, at: i64) -> Self {
        Self {
            kind: EventKind::DnsError,
            owner: None,
            body: json!({
                "event": EventKind::DnsError.as_str(),
                "at": at,
                "name": name,
                "error": error,
            }),
        }
    }
}

/// The body of a test delivery to webhook `id`.
pub fn ping(id: i64, at: i64) -> Value {
    json!({"event": EventKind::Ping.as_str(), "at": at, "webhook": id})
}

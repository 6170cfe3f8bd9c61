//! The certificate manager: gets certificates from an ACME CA, keeps them, renews them.
//!
//! The broker builds one [`CertManager`] over the store, the edge's `warren_tls::CertStore`
//! and `warren_tls::Challenges`, and optionally a `warren_dns::DnsProvider`. At start
//! [`CertManager::load`] puts every stored certificate back into the edge; when a name needs a
//! certificate the broker calls [`CertManager::ensure`] (waits for it) or
//! [`CertManager::request`] (queues it, with the tenant it is charged to); [`CertManager::run`]
//! is the background task that works the queue, renews at two thirds of each certificate's
//! lifetime, and retries failures with exponential backoff (1 minute doubling to 24 hours by
//! default) so a failing CA is never hammered. Until a new certificate is in, the old one keeps
//! being served.
//!
//! Challenges: HTTP-01 or TLS-ALPN-01 are answered by the edge from `Challenges`; DNS-01 puts a
//! TXT record through the DNS provider, and is what wildcards (`*.example.com`) always use.
//! Every challenge entry and TXT record is removed after the attempt, successful or not.
//!
//! First orders go through a weekly [`OrderBudget`] below the CA's rate limits, with a bounded
//! share per tenant: a name past it waits (its status says so) and is ordered when the 7-day
//! window slides. Renewals are never held back, but count. The budget is derived from the
//! store's `cert.issue` audit events, so it survives restarts.
//!
//! Private keys (certificates' and the ACME account's) are encrypted at rest with a
//! [`KeyCipher`] before they reach the store.
#![warn(missing_docs)]

mod account;
mod budget;
mod cipher;
mod error;
mod manager;
mod names;
mod order;
mod schedule;

pub use account::check;
pub use budget::{Candidate, Issued, Limit, OrderBudget, Verdict, WINDOW};
pub use cipher::KeyCipher;
pub use error::AcmeError;
pub use manager::{BUDGET_WAIT, CertManager, CertStatus};

use std::time::Duration;

/// How the CA is asked to validate a name (wildcards always use [`ChallengeKind::Dns01`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    /// `GET http://NAME/.well-known/acme-challenge/TOKEN` answered by the edge on port 80.
    Http01,
    /// A TLS handshake on port 443 with ALPN `acme-tls/1`, answered by the edge's resolver.
    TlsAlpn01,
    /// A TXT record at `_acme-challenge.NAME`, through the DNS provider.
    Dns01,
}

impl ChallengeKind {
    /// The RFC 8555 name: `http-01`, `tls-alpn-01`, `dns-01`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Dns01 => "dns-01",
        }
    }
}

impl std::fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ChallengeKind {
    type Err = AcmeError;

    /// Accepts the RFC names, with or without the dash (`http-01`, `http01`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "http01" => Ok(Self::Http01),
            "tlsalpn01" => Ok(Self::TlsAlpn01),
            "dns01" => Ok(Self::Dns01),
            _ => Err(AcmeError::BadSettings(format!(
                "unknown challenge {s:?} (http-01, tls-alpn-01, dns-01)"
            ))),
        }
    }
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Everything the manager needs to know about the CA and the keys, validated by the binary.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The CA's directory URL ([`LETS_ENCRYPT`], or a test CA such as Pebble).
    pub directory_url: String,
    /// An extra root certificate (PEM) trusted for the CA's own HTTPS, besides the system
    /// roots: a private or test CA (Pebble's listener certificate).
    pub root_ca_pem: Option<String>,
    /// Contact address given to the CA for expiry notices.
    pub email: Option<String>,
    /// How names other than wildcards are validated.
    pub challenge: ChallengeKind,
    /// Encrypts private keys before they are stored.
    pub key: KeyCipher,
    /// First retry delay after a failure; doubles per consecutive failure.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long one order may take, validation and issuance included, before it counts as
    /// failed.
    pub order_timeout: Duration,
    /// How many certificates may be issued per 7 days, and per tenant.
    pub budget: OrderBudget,
    /// How a DNS-01 order waits for its TXT record to show before the CA looks.
    pub propagation: Propagation,
}

/// Where a DNS-01 record must show, and for how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propagation {
    /// The servers to ask; `None`: the DNS provider's own idea of the zone's authoritative
    /// servers ([`warren_dns::DnsProvider::authoritative_servers`]).
    pub servers: Option<Vec<std::net::SocketAddr>>,
    /// How long to wait before the order fails (and is retried later).
    pub timeout: Duration,
}

impl Default for Propagation {
    fn default() -> Self {
        Self {
            servers: None,
            timeout: warren_dns::propagation::DEFAULT_TIMEOUT,
        }
    }
}

impl AcmeSettings {
    /// Settings for `directory_url` with HTTP-01, no contact, no extra root, and the default
    /// timings (retry 1 min doubling to 24 h, orders time out after 3 min) and the default
    /// [`OrderBudget`] (40 a week, 10 per tenant).
    pub fn new(directory_url: impl Into<String>, key: KeyCipher) -> Self {
        Self {
            directory_url: directory_url.into(),
            root_ca_pem: None,
            email: None,
            challenge: ChallengeKind::Http01,
            key,
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(24 * 3600),
            order_timeout: Duration::from_secs(180),
            propagation: Propagation::default(),
            budget: OrderBudget::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_kind_round_trips() {
        for kind in [
            ChallengeKind::Http01,
            ChallengeKind::TlsAlpn01,
            ChallengeKind::Dns01,
        ] {
            assert_eq!(kind.as_str().parse::<ChallengeKind>().ok(), Some(kind));
        }
        assert_eq!(
            "TLS-ALPN-01".parse::<ChallengeKind>().ok(),
            Some(ChallengeKind::TlsAlpn01)
        );
        assert!("smtp-01".parse::<ChallengeKind>().is_err());
    }
}

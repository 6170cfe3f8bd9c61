//! Warren's DNS providers: how the broker puts records into the world.
//!
//! Two jobs need DNS. The broker publishes the addresses its edge listens on (A/AAAA at the
//! zone apex or at `*.zone`), and the ACME client proves control of a name for DNS-01 by
//! putting a TXT value at `_acme-challenge.NAME` and removing it afterwards. Both go through
//! one trait, [`DnsProvider`], chosen once by the binary from configuration:
//!
//! - [`Cloudflare`]: the zone lives at Cloudflare; records are changed through its v4 HTTP API.
//! - [`Rfc2136`]: the zone lives on any server speaking RFC 2136 dynamic UPDATE with TSIG
//!   (BIND, Knot, PowerDNS, ...).
//! - [`BuiltinDns`]: the zone is delegated to the broker itself, which answers authoritatively
//!   from memory. No third party, no credentials; the broker's sockets are handed to
//!   [`BuiltinDns::run`].
//!
//! Every provider works in one zone fixed at construction; names are fully qualified (a
//! trailing dot is optional, case does not matter) and must lie inside that zone. All
//! operations are idempotent so callers can simply retry.
#![warn(missing_docs)]

pub mod builtin;
pub mod cloudflare;
mod error;
mod names;
pub mod propagation;
pub mod rfc2136;

pub use builtin::{BuiltinDns, BuiltinSettings};
pub use cloudflare::{Cloudflare, CloudflareSettings};
pub use error::DnsError;
pub use rfc2136::{Rfc2136, Rfc2136Settings, TsigAlgorithm};

use std::net::IpAddr;

/// A place where Warren can create and delete DNS records in one zone.
///
/// Implementations are shared (`Arc<dyn DnsProvider>`) between the edge's address publisher and
/// the ACME client, and may be called concurrently.
#[async_trait::async_trait]
pub trait DnsProvider: Send + Sync + 'static {
    /// Makes the A/AAAA records at `fqdn` exactly `addrs` (creates, updates, deletes as
    /// needed). Idempotent. An empty `addrs` removes them all.
    async fn set_addresses(&self, fqdn: &str, addrs: &[IpAddr]) -> Result<(), DnsError>;

    /// Removes all A/AAAA records at `fqdn`. Idempotent (absent is fine).
    async fn remove_addresses(&self, fqdn: &str) -> Result<(), DnsError>;

    /// Adds one TXT value at `fqdn`; several values may coexist at one name (ACME:
    /// `example.com` and `*.example.com` both put a TXT at `_acme-challenge.example.com`).
    /// Idempotent.
    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError>;

    /// Removes one TXT value at `fqdn`, leaving others. Idempotent.
    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError>;

    /// Short name for logs and status: "cloudflare", "rfc2136", "builtin".
    fn kind(&self) -> &'static str;

    /// The servers to ask whether a change is visible yet (see [`propagation`]): the zone's
    /// authoritative servers as far as the provider knows them. Empty: visible as soon as the
    /// change returns (the built-in server is the authority itself).
    async fn authoritative_servers(&self) -> Vec<std::net::SocketAddr> {
        Vec::new()
    }

    /// Proves, changing nothing, that the provider can be reached with these credentials
    /// (`broker check`); says what was proven. A provider with nothing to reach says so.
    async fn check(&self) -> Result<String, DnsError> {
        Ok(format!("{}: nothing to reach", self.kind()))
    }
}

/// A credential whose `Debug` prints `MASKED`, so settings can be logged whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MASKED")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_masked() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "MASKED");
        assert_eq!(s.expose(), "hunter2");
    }
}

//! What can go wrong when changing DNS, worded so an operator knows whose side to look at.

/// A DNS change that did not happen.
///
/// `BadInput` is Warren's own mistake (or its configuration's); every other variant names the
/// provider (`"cloudflare"`, `"rfc2136"`) and says whether it could not be reached, refused our
/// credentials, does not have the zone, or refused the change in its own words.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The request itself is wrong: a name outside the zone, a malformed name, a bad key.
    #[error("invalid DNS request: {0}")]
    BadInput(String),
    /// The provider could not be reached or did not answer in time.
    #[error("{provider}: DNS provider unreachable: {detail}")]
    Unreachable {
        /// Which provider ([`crate::DnsProvider::kind`]).
        provider: &'static str,
        /// What the network said.
        detail: String,
    },
    /// The provider refused our credentials (API token, TSIG key).
    #[error("{provider}: DNS provider refused our credentials: {detail}")]
    AuthRefused {
        /// Which provider.
        provider: &'static str,
        /// The provider's words, or what we observed.
        detail: String,
    },
    /// The provider does not serve the configured zone (or our credentials cannot see it).
    #[error("{provider}: DNS provider has no zone {zone:?}")]
    ZoneNotFound {
        /// Which provider.
        provider: &'static str,
        /// The zone we asked for.
        zone: String,
    },
    /// The provider understood the request and refused it; `detail` is its own error text.
    #[error("{provider}: DNS provider rejected the change: {detail}")]
    Rejected {
        /// Which provider.
        provider: &'static str,
        /// The provider's own error text.
        detail: String,
    },
    /// A record the provider accepted did not show at the zone's authoritative servers in time.
    #[error("DNS change not visible yet: {detail}")]
    NotVisible {
        /// Which server, and what it answered.
        detail: String,
    },
    /// The provider answered with something we cannot use (malformed, unsigned, unexpected).
    #[error("{provider}: unusable answer from DNS provider: {detail}")]
    BadResponse {
        /// Which provider.
        provider: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}

impl DnsError {
    /// Whether trying again later may help (network trouble, a garbled answer). Credentials,
    /// missing zones, rejections and bad input need a human.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::BadResponse { .. } | Self::NotVisible { .. }
        )
    }
}

//! What can go wrong getting a certificate, worded for `broker certs list` and the logs: each
//! variant says whose side failed (the CA, DNS, our store, our configuration).

/// A certificate manager failure.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA refused or failed a request, or could not be reached (connection refused, TLS,
    /// timeout): retried with backoff.
    #[error("ACME CA: {0}")]
    Ca(#[from] instant_acme::Error),
    /// The CA could not validate a name: its problem document says why (DNS, connection,
    /// wrong answer).
    #[error("ACME validation of {name} failed: {detail}")]
    Validation {
        /// The name (`*.example.com` for a wildcard's authorization).
        name: String,
        /// The CA's explanation.
        detail: String,
    },
    /// The CA offered no challenge of the kind we use for this name.
    #[error("the CA offers no {kind} challenge for {name}")]
    NoChallenge {
        /// The name.
        name: String,
        /// The kind we wanted.
        kind: crate::ChallengeKind,
    },
    /// The order did not complete within `order_timeout`.
    #[error("ACME order for {0} timed out")]
    Timeout(String),
    /// The DNS provider failed to publish or remove a DNS-01 record.
    #[error("DNS provider: {0}")]
    Dns(#[from] warren_dns::DnsError),
    /// DNS-01 is needed (configured, or a wildcard name) but no DNS provider is configured.
    #[error("{0} needs a DNS-01 challenge but no DNS provider is configured")]
    NoDnsProvider(String),
    /// The name cannot be put in a certificate.
    #[error("invalid certificate name {0:?}")]
    InvalidName(String),
    /// An earlier failure for this name is being backed off; the next attempt is at `until`.
    #[error("{name}: waiting until {until} (unix) after: {last_error}")]
    BackingOff {
        /// The name.
        name: String,
        /// Unix seconds of the next attempt.
        until: i64,
        /// Why the last attempt failed.
        last_error: String,
    },
    /// A first order is held back by the weekly order budget (the CA's rate limits are shared
    /// by every tenant); the name is recorded as waiting and ordered when the budget frees.
    #[error("{name}: waiting for the weekly order budget ({reason}); next look at {until} (unix)")]
    OverBudget {
        /// The name.
        name: String,
        /// Unix seconds of the next look, when an issuance leaves the 7-day window.
        until: i64,
        /// Which limit holds it back.
        reason: String,
    },
    /// The order budget's history could not be read from the store, so a first order was not
    /// placed (renewals go ahead); it is tried again on the next pass.
    #[error("{0}: first order not placed: the order budget cannot be read from the store")]
    BudgetUnknown(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] warren_store::StoreError),
    /// An issued or stored certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] warren_tls::TlsError),
    /// A stored secret could not be decrypted (wrong key) or the key material is malformed.
    #[error("key encryption: {0}")]
    Cipher(String),
    /// Reading or creating the key file failed.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The settings are unusable (bad root PEM, unknown challenge name).
    #[error("ACME settings: {0}")]
    BadSettings(String),
    /// The CA's directory did not answer as one (`broker check`).
    #[error("ACME directory: {0}")]
    Directory(String),
    /// Something on our side that should not fail (key generation, JSON encoding).
    #[error("internal: {0}")]
    Internal(String),
}

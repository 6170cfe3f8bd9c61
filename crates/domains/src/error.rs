//! What can go wrong with a custom domain, worded for the tenant who attached it.

/// A refused host name, or a checker that could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The host name cannot be attached; `why` says what is wrong with it.
    #[error("{host:?} cannot be attached: {why}")]
    InvalidHostname {
        /// What was given (cut to 80 characters).
        host: String,
        /// The reason, for the tenant.
        why: String,
    },
    /// `dns_resolvers` named something that is not an address.
    #[error("dns_resolvers: {0:?} is not IP or IP:PORT")]
    BadResolver(String),
    /// The system's resolver configuration (`/etc/resolv.conf`) could not be read.
    #[error("cannot read the system's DNS resolvers: {0}")]
    SystemResolvers(String),
}

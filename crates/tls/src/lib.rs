//! What certificates the edge serves, and how it answers ACME challenges.
//!
//! The edge terminates TLS with the [`server_config`] built around a [`Resolver`]. The resolver
//! reads two lock-free maps on every handshake (rustls asks synchronously):
//!
//! - a [`CertStore`] of certificates by exact host name or wildcard zone, filled by the ACME
//!   manager (`warren-acme`) or from operator-supplied PEM files ([`load_pem`]); replacing an
//!   entry affects only handshakes that start afterwards, open connections keep their keys;
//! - the [`Challenges`] in flight: HTTP-01 key authorizations (the edge answers
//!   `GET /.well-known/acme-challenge/TOKEN` from them) and TLS-ALPN-01 certificates (served
//!   when a client asks for nothing but the `acme-tls/1` protocol, RFC 8737).
//!
//! No ACME logic lives here: this crate is what the edge needs at handshake time, plus the PEM
//! and X.509 helpers ([`cert_info`]) the ACME manager and the broker use to read chains.
#![warn(missing_docs)]

mod certs;
mod challenges;
mod pem;
mod resolver;

pub use certs::CertStore;
pub use challenges::{Challenges, HTTP01_PREFIX};
pub use pem::{CertInfo, cert_info, cert_info_der, load_pem, load_pem_files};
pub use resolver::{ACME_TLS_ALPN, ALPN_PROTOCOLS, Resolver, server_config};

pub use rustls::sign::CertifiedKey;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM text held no `CERTIFICATE` block.
    #[error("no certificate in the PEM chain")]
    NoCertificate,
    /// The PEM text held no private key block.
    #[error("no private key in the PEM text")]
    NoPrivateKey,
    /// A PEM block was malformed.
    #[error("malformed PEM: {0}")]
    Pem(String),
    /// rustls rejected the key (unsupported type, or it does not match the certificate).
    #[error("unusable private key: {0}")]
    Key(#[from] rustls::Error),
    /// The certificate is not valid X.509.
    #[error("unreadable certificate: {0}")]
    Certificate(String),
    /// A challenge certificate could not be generated.
    #[error("could not generate a challenge certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Lowercases a host name and drops a trailing dot: the form every map here is keyed by.
pub(crate) fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

//! Choosing the certificate for a handshake, and the rustls config around that choice.
//!
//! ALPN and TLS-ALPN-01: rustls picks the first protocol in the *server's* list that the client
//! offers, and fails the handshake (`no_application_protocol` alert) when a client offers ALPN
//! but nothing matches. A validating CA offers only `acme-tls/1` (RFC 8737 §3), so the one
//! config lists `h2`, `http/1.1`, then `acme-tls/1`: browsers never get `acme-tls/1` (they offer
//! `h2` or `http/1.1`, which come first), and the CA gets it. The resolver mirrors that choice:
//! it answers from the challenge map exactly when `acme-tls/1` is the protocol that will be
//! negotiated, and fails the handshake when no challenge is pending for the name. So
//! `acme-tls/1` is only ever negotiated together with a challenge certificate; the edge then
//! closes the connection right after the handshake (the handshake was the answer).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::debug;

use crate::{CertStore, Challenges};

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The ALPN protocols of [`server_config`], server preference first.
pub const ALPN_PROTOCOLS: [&[u8]; 3] = [b"h2", b"http/1.1", ACME_TLS_ALPN];

/// Picks the certificate for each TLS handshake from a [`CertStore`] by SNI, or from the
/// pending TLS-ALPN-01 [`Challenges`] for validation handshakes. Returning no certificate makes
/// rustls abort the handshake with an alert, so an unknown name fails fast instead of hanging.
#[derive(Debug)]
pub struct Resolver {
    certs: Arc<CertStore>,
    challenges: Arc<Challenges>,
    default: Option<Arc<CertifiedKey>>,
}

impl Resolver {
    /// A resolver over the served certificates and the pending challenges.
    pub fn new(certs: Arc<CertStore>, challenges: Arc<Challenges>) -> Self {
        Self {
            certs,
            challenges,
            default: None,
        }
    }

    /// Serves `key` to clients that send no SNI (clients connecting by IP address). Without a
    /// default such handshakes fail.
    pub fn with_default(mut self, key: Arc<CertifiedKey>) -> Self {
        self.default = Some(key);
        self
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if negotiates_acme_tls(&hello) {
            let name = hello.server_name()?;
            let key = self.challenges.tls_alpn01(name);
            if key.is_none() {
                debug!(sni = name, "acme-tls/1 handshake with no pending challenge");
            }
            return key;
        }
        match hello.server_name() {
            Some(sni) => {
                let key = self.certs.get(sni);
                if key.is_none() {
                    debug!(sni, "no certificate for this name");
                }
                key
            }
            None => self.default.clone(),
        }
    }
}

/// Whether rustls will select `acme-tls/1` from [`ALPN_PROTOCOLS`] for this ClientHello.
fn negotiates_acme_tls(hello: &ClientHello<'_>) -> bool {
    let Some(offered) = hello.alpn() else {
        return false;
    };
    let offered: Vec<&[u8]> = offered.collect();
    ALPN_PROTOCOLS
        .iter()
        .find(|ours| offered.contains(ours))
        .is_some_and(|chosen| *chosen == ACME_TLS_ALPN)
}

/// The edge's TLS config: ring, TLS 1.2 and 1.3, ALPN [`ALPN_PROTOCOLS`], certificates from
/// `resolver` (normally a [`Resolver`]). After the handshake, a connection whose negotiated
/// protocol is [`ACME_TLS_ALPN`] must be closed without reading from it.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Fixed inputs, cannot fail: ring's default provider supports both versions.
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3");
    let mut config = builder.with_no_client_auth().with_cert_resolver(resolver);
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

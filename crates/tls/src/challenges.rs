//! ACME challenges in flight, as the edge must answer them.
//!
//! The ACME manager adds an entry before telling the CA a challenge is ready and removes it once
//! the attempt is over; the edge reads: HTTP-01 on port 80 (`/.well-known/acme-challenge/TOKEN`
//! → key authorization) and TLS-ALPN-01 during the TLS handshake (domain → a self-signed
//! certificate carrying the `acmeIdentifier` extension). Both are `arc-swap` snapshots like the
//! certificates, because the TLS lookup happens inside rustls' synchronous resolver.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::{TlsError, normalize};

/// The path prefix of HTTP-01 challenge requests (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Pending HTTP-01 and TLS-ALPN-01 challenge answers, shared by the ACME manager (writer) and
/// the edge (reader).
#[derive(Debug, Default)]
pub struct Challenges {
    http01: ArcSwap<HashMap<String, String>>,
    tls_alpn01: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// No challenges pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers HTTP-01 requests for `token` with `key_authorization` until removed.
    pub fn add_http01(&self, token: &str, key_authorization: &str) {
        self.http01.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(token.to_owned(), key_authorization.to_owned());
            m
        });
    }

    /// Stops answering for `token`.
    pub fn remove_http01(&self, token: &str) {
        self.http01.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(token);
            m
        });
    }

    /// The key authorization for `token`, if a challenge with it is pending.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.http01.load().get(token).cloned()
    }

    /// The response body for an HTTP request path, when it is a pending HTTP-01 challenge
    /// (`/.well-known/acme-challenge/TOKEN`). The edge answers it on port 80 with `200` and
    /// this body (`text/plain`), whatever the Host, before routing to a tunnel and before any
    /// redirect to HTTPS: the name may have no certificate yet.
    pub fn http01_for_path(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        if token.is_empty() || token.contains('/') {
            return None;
        }
        self.http01(token)
    }

    /// Serves a TLS-ALPN-01 challenge certificate for `domain` (RFC 8737) until removed.
    /// `digest` is the SHA-256 of the key authorization; the certificate is self-signed, names
    /// only `domain`, and carries the digest in the critical `acmeIdentifier` extension.
    pub fn add_tls_alpn01(&self, domain: &str, digest: &[u8]) -> Result<(), TlsError> {
        let domain = normalize(domain);
        let key = Arc::new(challenge_cert(&domain, digest)?);
        self.tls_alpn01.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(domain.clone(), key.clone());
            m
        });
        Ok(())
    }

    /// Stops serving the TLS-ALPN-01 certificate for `domain`.
    pub fn remove_tls_alpn01(&self, domain: &str) {
        let domain = normalize(domain);
        self.tls_alpn01.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(&domain);
            m
        });
    }

    /// The TLS-ALPN-01 certificate pending for `domain` (exact name; challenges never use
    /// wildcards).
    pub fn tls_alpn01(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        let map = self.tls_alpn01.load();
        match map.get(domain) {
            Some(k) => Some(k.clone()),
            None if domain.ends_with('.') || domain.bytes().any(|b| b.is_ascii_uppercase()) => {
                map.get(&normalize(domain)).cloned()
            }
            None => None,
        }
    }

    /// How many challenges of both kinds are pending (tests check cleanup with it).
    pub fn len(&self) -> usize {
        self.http01.load().len() + self.tls_alpn01.load().len()
    }

    /// Whether no challenge is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The self-signed certificate RFC 8737 §3 asks for.
fn challenge_cert(domain: &str, digest: &[u8]) -> Result<CertifiedKey, TlsError> {
    let mut params = CertificateParams::new(vec![domain.to_owned()])?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which
    // rejects the critical acmeIdentifier extension. The key is the one we just signed with.
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key_der)?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http01_by_token_and_path() {
        let c = Challenges::new();
        c.add_http01("tok", "tok.thumb");
        assert_eq!(c.http01("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(
            c.http01_for_path("/.well-known/acme-challenge/tok")
                .as_deref(),
            Some("tok.thumb")
        );
        assert!(c.http01_for_path("/.well-known/acme-challenge/").is_none());
        assert!(
            c.http01_for_path("/.well-known/acme-challenge/tok/x")
                .is_none()
        );
        assert!(c.http01_for_path("/tok").is_none());
        c.remove_http01("tok");
        assert!(c.http01("tok").is_none() && c.is_empty());
    }

    #[test]
    fn tls_alpn01_certificate_carries_the_digest() {
        let c = Challenges::new();
        let digest = [7u8; 32];
        c.add_tls_alpn01("Chat.Example.com", &digest)
            .expect("generate");
        let key = c.tls_alpn01("chat.example.com").expect("pending");
        assert!(c.tls_alpn01("CHAT.example.com.").is_some());
        let info = crate::cert_info_der(&key.cert[0]).expect("parse");
        assert_eq!(info.names, ["chat.example.com"]);
        // id-pe-acmeIdentifier, critical, OCTET STRING of the digest.
        let (_, x509) = x509_parser::parse_x509_certificate(&key.cert[0]).expect("x509");
        let ext = x509
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        assert_eq!(&ext.value[2..], &digest);
        c.remove_tls_alpn01("chat.example.com");
        assert!(c.is_empty());
    }
}

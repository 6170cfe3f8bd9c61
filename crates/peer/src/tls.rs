//! The cluster CA and each node's certificate from it.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::PeerError;

/// The name in every node's certificate, which every dialer checks. Nodes are told apart by
/// the database, not by their certificates: a certificate proves membership of the cluster.
pub const CLUSTER_NAME: &str = "warren-cluster";

/// ALPN of the peer protocol, so a stray TLS client (or a future version) fails the handshake.
pub(crate) const ALPN: &[u8] = b"warren-peer/1";

fn certificate_error(e: impl std::fmt::Display) -> PeerError {
    PeerError::Certificate(e.to_string())
}

/// The CA's fixed parameters: an issuer is rebuilt from them and the stored key, so only the
/// key and the certificate (for the trust root) need keeping.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Warren cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The cluster's CA, as kept in the store (PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterCa {
    /// The CA certificate: every node's trust root.
    pub cert_pem: String,
    /// Its private key: what lets a node issue itself a certificate.
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA (ECDSA P-256), made by the first node that finds none in the store.
    pub fn generate() -> Result<Self, PeerError> {
        let key = KeyPair::generate().map_err(certificate_error)?;
        let cert = ca_params().self_signed(&key).map_err(certificate_error)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// ring's suites with AES-128-GCM first (both ends are ours, so it is what they agree on):
/// every byte through the hop is sealed by one node and opened by the other, and with AES
/// instructions the 128-bit key's ten rounds cost less than the 256-bit key's fourteen, which
/// rustls would pick by default. (ChaCha20 stays offered for nodes without them.)
fn hop_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}

/// This node's TLS settings for both directions, under the cluster CA.
#[derive(Clone)]
pub struct NodeTls {
    pub(crate) server: Arc<rustls::ServerConfig>,
    pub(crate) client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls").finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Issues this node a certificate (a fresh key, valid for [`CLUSTER_NAME`], for server
    /// and client use) from `ca`, and builds the listener's and the dialer's settings: each
    /// side requires the other's certificate to chain to the CA.
    pub fn issue(ca: &ClusterCa) -> Result<Self, PeerError> {
        let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(certificate_error)?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let key = KeyPair::generate().map_err(certificate_error)?;
        let mut params =
            CertificateParams::new(vec![CLUSTER_NAME.to_owned()]).map_err(certificate_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Warren node");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).map_err(certificate_error)?;
        let root =
            CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).map_err(certificate_error)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).map_err(certificate_error)?;
        let roots = Arc::new(roots);
        let chain = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(hop_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(certificate_error)?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(certificate_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(certificate_error)?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(certificate_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(certificate_error)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;

    use super::*;

    /// Two nodes' settings agree on AES-128-GCM, and the handshake needs both certificates.
    #[test]
    fn two_nodes_agree_on_aes_128_gcm() {
        let ca = ClusterCa::generate().expect("ca");
        let a = NodeTls::issue(&ca).expect("node a");
        let b = NodeTls::issue(&ca).expect("node b");
        let name = ServerName::try_from(CLUSTER_NAME).expect("name");
        let mut client = rustls::ClientConnection::new(a.client, name).expect("client");
        let mut server = rustls::ServerConnection::new(b.server).expect("server");
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let mut wire = Vec::new();
            client.write_tls(&mut wire).expect("client writes");
            server.read_tls(&mut &wire[..]).expect("server reads");
            server.process_new_packets().expect("server accepts");
            wire.clear();
            server.write_tls(&mut wire).expect("server writes");
            client.read_tls(&mut &wire[..]).expect("client reads");
            client.process_new_packets().expect("client accepts");
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        for suite in [
            client.negotiated_cipher_suite(),
            server.negotiated_cipher_suite(),
        ] {
            assert_eq!(
                suite.map(|s| s.suite()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
        }
        assert!(server.peer_certificates().is_some_and(|c| !c.is_empty()));
    }
}

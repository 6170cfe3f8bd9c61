//! Real TLS handshakes through `server_config` + `Resolver`: which certificate and which ALPN
//! protocol each kind of client gets, and that a name without a certificate fails fast.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warren_tls::{CertStore, CertifiedKey, Challenges, Resolver, cert_info_der, load_pem};

/// Accepts any certificate and signature: these tests look at which certificate was presented,
/// not at trust (webpki would refuse the critical acmeIdentifier extension of a challenge
/// certificate, as a validating CA's own code does not).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let _ = (m, c, d);
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let _ = (m, c, d);
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn cert(names: &[&str]) -> Arc<CertifiedKey> {
    let key = rcgen::KeyPair::generate().expect("key");
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let cert = rcgen::CertificateParams::new(names)
        .expect("params")
        .self_signed(&key)
        .expect("sign");
    Arc::new(load_pem(cert.pem(), key.serialize_pem()).expect("load"))
}

/// A TLS server on 127.0.0.1:0 that writes "hi" on every connection that negotiated an
/// application protocol other than acme-tls/1.
async fn server(resolver: Resolver) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(warren_tls::server_config(Arc::new(resolver)));
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(sock).await
                    && tls.get_ref().1.alpn_protocol() != Some(warren_tls::ACME_TLS_ALPN)
                {
                    let _ = tls.write_all(b"hi").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// What the client saw: the leaf's names and the negotiated protocol.
async fn connect(
    addr: std::net::SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> Result<(Vec<String>, Option<Vec<u8>>), std::io::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(sni.to_owned()).expect("name");
    let sock = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, sock))
        .await
        .expect("handshake must not hang")?;
    let (_, conn) = tls.get_ref();
    let leaf = conn.peer_certificates().expect("certs")[0].clone();
    let names = cert_info_der(&leaf).expect("parse").names;
    Ok((names, conn.alpn_protocol().map(|p| p.to_vec())))
}

#[tokio::test]
async fn certificates_and_alpn_by_kind_of_client() {
    let certs = Arc::new(CertStore::new());
    let challenges = Arc::new(Challenges::new());
    certs.insert("chat.test", cert(&["chat.test"]));
    certs.insert("*.zone.test", cert(&["*.zone.test"]));
    challenges
        .add_tls_alpn01("chat.test", &[1; 32])
        .expect("challenge");
    let resolver =
        Resolver::new(certs.clone(), challenges.clone()).with_default(cert(&["default.test"]));
    let addr = server(resolver).await;

    // A browser: exact certificate, h2 preferred.
    let (names, alpn) = connect(addr, "chat.test", &[b"h2", b"http/1.1"])
        .await
        .expect("browser");
    assert_eq!(
        (names, alpn.as_deref()),
        (vec!["chat.test".to_owned()], Some(&b"h2"[..]))
    );
    // Wildcard by SNI, no ALPN.
    let (names, alpn) = connect(addr, "a.zone.test", &[]).await.expect("wildcard");
    assert_eq!((names, alpn), (vec!["*.zone.test".to_owned()], None));
    // The CA validating TLS-ALPN-01: challenge certificate, acme-tls/1.
    let (names, alpn) = connect(addr, "chat.test", &[b"acme-tls/1"])
        .await
        .expect("validation");
    assert_eq!(names, ["chat.test"]);
    assert_eq!(alpn.as_deref(), Some(warren_tls::ACME_TLS_ALPN));
    // A client that also offers h2 is not a validation: normal certificate, h2.
    let (_, alpn) = connect(addr, "chat.test", &[b"acme-tls/1", b"h2"])
        .await
        .expect("mixed");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    // acme-tls/1 for a name with no pending challenge: refused, not the real certificate.
    assert!(
        connect(addr, "a.zone.test", &[b"acme-tls/1"])
            .await
            .is_err()
    );
    // Unknown name: refused promptly with an alert.
    assert!(connect(addr, "nobody.test", &[b"h2"]).await.is_err());
    // No SNI (connecting by IP): the default certificate.
    let (names, _) = connect(addr, "127.0.0.1", &[b"http/1.1"])
        .await
        .expect("no sni");
    assert_eq!(names, ["default.test"]);
}

#[tokio::test]
async fn swapping_a_certificate_keeps_open_connections() {
    let certs = Arc::new(CertStore::new());
    certs.insert("chat.test", cert(&["chat.test"]));
    let addr = {
        // This server keeps each connection open and echoes, to prove the old one still works.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let resolver = Resolver::new(certs.clone(), Arc::new(Challenges::new()));
        let acceptor =
            tokio_rustls::TlsAcceptor::from(warren_tls::server_config(Arc::new(resolver)));
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    let mut buf = [0u8; 64];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    // A resumed session would report the certificate of the session it resumes.
    config.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(config);
    let connector = tokio_rustls::TlsConnector::from(config);
    let sock = TcpStream::connect(addr).await.expect("connect");
    let mut old = connector
        .connect(ServerName::try_from("chat.test").expect("name"), sock)
        .await
        .expect("handshake");
    let first_leaf = old.get_ref().1.peer_certificates().expect("certs")[0].clone();

    certs.insert("chat.test", cert(&["chat.test"]));

    old.write_all(b"ping")
        .await
        .expect("write on the old connection");
    let mut buf = [0u8; 4];
    old.read_exact(&mut buf)
        .await
        .expect("read on the old connection");
    assert_eq!(&buf, b"ping");
    let sock = TcpStream::connect(addr).await.expect("connect");
    let new = connector
        .connect(ServerName::try_from("chat.test").expect("name"), sock)
        .await
        .expect("handshake");
    let new_leaf = new.get_ref().1.peer_certificates().expect("certs")[0].clone();
    assert_ne!(
        first_leaf, new_leaf,
        "new handshakes get the new certificate"
    );
}

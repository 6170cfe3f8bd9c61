//! A private ACME world per test: a real Pebble CA on free ports, a `BuiltinDns` it resolves
//! names with (every test name points at 127.0.0.1), an HTTP-01 responder and a TLS listener
//! (TLS-ALPN-01 answers, and the "edge" test clients connect to) over the same `CertStore` and
//! `Challenges` the manager writes. Everything stops when the `Env` is dropped.

pub mod ari;
pub mod pebble;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use warren_acme::{AcmeSettings, CertManager, ChallengeKind, KeyCipher};
use warren_dns::{BuiltinDns, BuiltinSettings, DnsError, DnsProvider};
use warren_store::Store;
use warren_tls::{CertStore, Challenges, Resolver};

pub use pebble::Pebble;

/// The DNS zone every test name lives in.
pub const ZONE: &str = "test.warren";

/// One test's world.
pub struct Env {
    pub pebble: Pebble,
    pub dns: Arc<RecordingDns>,
    pub store: Arc<dyn Store>,
    pub certs: Arc<CertStore>,
    pub challenges: Arc<Challenges>,
    pub key: KeyCipher,
    pub key_path: PathBuf,
    pub db_url: String,
    /// Where the TLS listener (the edge stand-in) accepts; Pebble's tlsPort.
    pub tls_addr: SocketAddr,
    /// The built-in DNS server Pebble resolves with: the zone's one authoritative server.
    pub dns_addr: SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Env {
    pub async fn start() -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warren_acme=debug".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let shutdown = CancellationToken::new();

        let builtin = Arc::new(
            BuiltinDns::new(BuiltinSettings {
                zone: ZONE.into(),
                ns: vec![format!("ns.{ZONE}")],
                soa_email: String::new(),
                ttl: 1,
                apex_addrs: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            })
            .expect("dns settings"),
        );
        let (udp, tcp) = BuiltinDns::bind_sockets("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("dns sockets");
        let dns_addr = udp.local_addr().expect("dns addr");
        tokio::spawn(builtin.clone().run(udp, tcp, shutdown.clone()));

        let certs = Arc::new(CertStore::new());
        let challenges = Arc::new(Challenges::new());
        let http = TcpListener::bind("127.0.0.1:0").await.expect("http");
        let http_port = http.local_addr().expect("addr").port();
        tokio::spawn(serve_http01(http, challenges.clone(), shutdown.clone()));
        let tls = TcpListener::bind("127.0.0.1:0").await.expect("tls");
        let tls_addr = tls.local_addr().expect("addr");
        let resolver = Resolver::new(certs.clone(), challenges.clone());
        tokio::spawn(serve_tls(tls, Arc::new(resolver), shutdown.clone()));

        let pebble = Pebble::start(dir.path(), dns_addr, http_port, tls_addr.port()).await;

        let db_url = format!("sqlite://{}", dir.path().join("warren.db").display());
        let store = warren_store::open(&db_url).await.expect("store");
        let key_path = dir.path().join("data").join("acme.key");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let key = KeyCipher::load_or_create(&key_path).expect("key file");
        Env {
            pebble,
            dns: Arc::new(RecordingDns::new(builtin)),
            store,
            certs,
            challenges,
            key,
            key_path,
            db_url,
            tls_addr,
            dns_addr,
            shutdown,
            _dir: dir,
        }
    }

    /// Settings for this env's Pebble, with short retry delays.
    pub fn settings(&self, challenge: ChallengeKind) -> AcmeSettings {
        let mut s = AcmeSettings::new(self.pebble.directory_url.clone(), self.key.clone());
        s.root_ca_pem = Some(self.pebble.listener_ca_pem.clone());
        s.email = Some("ops@test.warren".into());
        s.challenge = challenge;
        s.order_timeout = Duration::from_secs(60);
        s
    }

    /// A manager over this env's store, certificate store, challenges and DNS.
    pub fn manager(&self, challenge: ChallengeKind) -> Arc<CertManager> {
        Arc::new(CertManager::new(
            self.settings(challenge),
            self.store.clone(),
            self.certs.clone(),
            self.challenges.clone(),
            Some(self.dns.clone() as Arc<dyn DnsProvider>),
        ))
    }

    /// A manager with `settings` (this env's, changed) and no DNS provider: HTTP-01 only.
    pub fn manager_with(&self, settings: AcmeSettings) -> Arc<CertManager> {
        Arc::new(CertManager::new(
            settings,
            self.store.clone(),
            self.certs.clone(),
            self.challenges.clone(),
            None,
        ))
    }

    /// Points `name` at 127.0.0.1 in the test zone, where Pebble will look for it.
    pub async fn add_host(&self, name: &str) {
        self.dns
            .set_addresses(name, &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .await
            .expect("A record");
    }

    /// A TLS connection to the edge stand-in for `sni`, verified against Pebble's issuing root.
    pub async fn connect(
        &self,
        sni: &str,
        roots: &RootCertStore,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let sock = TcpStream::connect(self.tls_addr).await?;
        let name = ServerName::try_from(sni.to_owned()).expect("server name");
        tokio::time::timeout(Duration::from_secs(10), connector.connect(name, sock))
            .await
            .map_err(|_| std::io::Error::other("handshake timed out"))?
    }
}

/// The leaf a TLS stream was served.
pub fn leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().expect("certificates")[0].clone()
}

/// Polls `check` every 50 ms until it returns `Some`, failing the test after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The DNS provider the manager gets: the built-in server, plus a record of which TXT values
/// are live, so tests can check DNS-01 cleanup.
pub struct RecordingDns {
    inner: Arc<BuiltinDns>,
    pub live_txt: Mutex<HashSet<(String, String)>>,
    pub txt_added: Mutex<usize>,
    /// How long after `add_txt` has answered "done" the record shows at the server, as with a
    /// provider whose API returns before its secondaries (or Cloudflare's edge) have it.
    pub txt_lag: Mutex<Duration>,
}

impl RecordingDns {
    fn new(inner: Arc<BuiltinDns>) -> Self {
        Self {
            inner,
            live_txt: Mutex::new(HashSet::new()),
            txt_added: Mutex::new(0),
            txt_lag: Mutex::new(Duration::ZERO),
        }
    }
}

#[async_trait::async_trait]
impl DnsProvider for RecordingDns {
    async fn set_addresses(&self, fqdn: &str, addrs: &[IpAddr]) -> Result<(), DnsError> {
        self.inner.set_addresses(fqdn, addrs).await
    }
    async fn remove_addresses(&self, fqdn: &str) -> Result<(), DnsError> {
        self.inner.remove_addresses(fqdn).await
    }
    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let lag = *self.txt_lag.lock().expect("lock");
        if lag.is_zero() {
            self.inner.add_txt(fqdn, value).await?;
        } else {
            let (inner, fqdn, value) = (self.inner.clone(), fqdn.to_owned(), value.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(lag).await;
                inner.add_txt(&fqdn, &value).await.expect("late TXT");
            });
        }
        *self.txt_added.lock().expect("lock") += 1;
        self.live_txt
            .lock()
            .expect("lock")
            .insert((fqdn.to_owned(), value.to_owned()));
        Ok(())
    }
    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.inner.remove_txt(fqdn, value).await?;
        self.live_txt
            .lock()
            .expect("lock")
            .remove(&(fqdn.to_owned(), value.to_owned()));
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "recording-builtin"
    }
}

/// The edge's HTTP-01 answer, as the edge gives it on port 80.
async fn serve_http01(
    listener: TcpListener,
    challenges: Arc<Challenges>,
    shutdown: CancellationToken,
) {
    loop {
        let sock = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
        };
        let challenges = challenges.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let answer = challenges.http01_for_path(req.uri().path());
                    async move {
                        let (status, body) = match answer {
                            Some(body) => (StatusCode::OK, body),
                            None => (StatusCode::NOT_FOUND, String::new()),
                        };
                        let mut rsp = Response::new(Full::new(Bytes::from(body)));
                        *rsp.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(rsp)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), service)
                .await;
        });
    }
}

/// The edge's TLS listener: challenge handshakes end after the handshake (RFC 8737); other
/// connections echo what they receive, so a test can tell an open connection still works.
async fn serve_tls(listener: TcpListener, resolver: Arc<Resolver>, shutdown: CancellationToken) {
    let acceptor = tokio_rustls::TlsAcceptor::from(warren_tls::server_config(resolver));
    loop {
        let sock = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(sock).await else {
                return;
            };
            if tls.get_ref().1.alpn_protocol() == Some(warren_tls::ACME_TLS_ALPN) {
                return;
            }
            let mut buf = [0u8; 1024];
            while let Ok(n) = tls.read(&mut buf).await {
                if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

//! A Pebble ACME test CA as a child process (Debian's `pebble` package, 2.x): its HTTPS
//! listener certificate is made here with rcgen (the package ships none), its ports are picked
//! free, and it resolves names through the test's DNS server. Killed on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

pub struct Pebble {
    pub directory_url: String,
    /// The CA of Pebble's own HTTPS listener (what `AcmeSettings::root_ca_pem` is for).
    pub listener_ca_pem: String,
    /// Pebble's HTTPS listener, its certificate and key files (the ARI stand-in serves them too).
    pub listen: SocketAddr,
    pub listener_files: (std::path::PathBuf, std::path::PathBuf),
    pub mgmt_addr: SocketAddr,
    child: Child,
    log: std::path::PathBuf,
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`, asking
    /// `dns` for addresses and TXT records. Retries with new ports if one was taken meanwhile.
    pub async fn start(dir: &Path, dns: SocketAddr, http_port: u16, tls_port: u16) -> Pebble {
        let (ca_pem, cert_path, key_path) = listener_cert(dir);
        let bin = std::env::var("PEBBLE").unwrap_or_else(|_| "pebble".to_owned());
        for attempt in 0..5 {
            let listen = free_port();
            let mgmt = free_port();
            let config = serde_json::json!({ "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": mgmt.to_string(),
                "certificate": cert_path,
                "privateKey": key_path,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }});
            let config_path = dir.join(format!("pebble-{attempt}.json"));
            std::fs::write(&config_path, config.to_string()).expect("pebble config");
            let log = dir.join(format!("pebble-{attempt}.log"));
            let out = std::fs::File::create(&log).expect("log");
            let mut child = Command::new(&bin)
                .arg("-config")
                .arg(&config_path)
                .arg("-dnsserver")
                .arg(dns.to_string())
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdout(out.try_clone().expect("log"))
                .stderr(out)
                .kill_on_drop(true)
                .spawn()
                .expect("pebble must be installed: apt-get install pebble (or set PEBBLE=path)");
            let roots = roots_of(&ca_pem);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait().expect("wait").is_some() {
                    break; // Most likely a port was taken: try again with new ones.
                }
                if let Ok((200, _)) = https_get(listen, "/dir", &roots).await {
                    return Pebble {
                        directory_url: format!("https://{listen}/dir"),
                        listener_ca_pem: ca_pem,
                        listen,
                        listener_files: (cert_path.clone().into(), key_path.clone().into()),
                        mgmt_addr: mgmt,
                        child,
                        log,
                    };
                }
                if tokio::time::Instant::now() > deadline {
                    let _ = child.kill().await;
                    panic!(
                        "pebble did not start: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("pebble could not start on free ports");
    }

    /// The root Pebble issues under (new on every Pebble start), from its management API.
    pub async fn issuing_root(&self) -> RootCertStore {
        let (status, body) =
            https_get(self.mgmt_addr, "/roots/0", &roots_of(&self.listener_ca_pem))
                .await
                .expect("management API");
        assert_eq!(status, 200, "roots/0: {body}");
        roots_of(&body)
    }

    /// Stops Pebble: the CA is down from here on.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Pebble's output so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A port on 127.0.0.1, free for TCP and UDP a moment ago, for a child or a broker that must be
/// told its port before it binds it (Pebble validates on fixed ports).
///
/// Taken below the kernel's ephemeral range, so no `bind(0)` or outgoing connection anywhere on
/// the machine can be handed it in between: CI once lost a test to a port `bind(0)` had given out
/// a second time. Never the same port twice in one process; processes start apart by their pid.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let Some((low, high)) = below_ephemeral() else {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        return l.local_addr().expect("addr");
    };
    let span = high - low;
    let start = std::process::id().wrapping_mul(7919) % span;
    loop {
        let i = TAKEN.fetch_add(1, Ordering::Relaxed);
        assert!(i < span, "no free port left in {low}..{high}");
        let port = u16::try_from(low + (start + i) % span).expect("below the ephemeral range");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::TcpListener::bind(addr).is_ok() && std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// Ports 10000 to 19999, when the kernel's ephemeral range starts above them. The tests'
/// `--tcp-ports` ranges sit from 21000 up, between these and the ephemeral range.
fn below_ephemeral() -> Option<(u32, u32)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u32 = range.split_whitespace().next()?.parse().ok()?;
    (low >= 20000).then_some((10000, 20000))
}

/// A CA and a `localhost` / `127.0.0.1` certificate it signed, written for Pebble.
fn listener_cert(dir: &Path) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Warren test Pebble listener CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &*ca)
        .expect("leaf");
    let cert_path = dir.join("pebble-listener.pem");
    let key_path = dir.join("pebble-listener.key");
    std::fs::write(&cert_path, leaf.pem()).expect("write");
    std::fs::write(&key_path, leaf_key.serialize_pem()).expect("write");
    (
        ca.pem(),
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

pub fn roots_of(pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    roots
}

/// A minimal HTTPS GET (HTTP/1.0, so the body ends at EOF): status and body.
pub async fn https_get(
    addr: SocketAddr,
    path: &str,
    roots: &RootCertStore,
) -> std::io::Result<(u16, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let sock = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, sock)
        .await?;
    // Pebble writes its directory's URLs with the host asked for.
    tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    // Go's server may close without close_notify; what was read is enough.
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

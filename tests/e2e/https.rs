//! HTTPS at the edge: termination with HTTP/1.1 and HTTP/2 (real curl), redirect, HSTS,
//! TLS passthrough by SNI, and raw TCP tunnels.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::get;
use crate::harness::{Db, Ssh, TestBroker};
use crate::origin::Origin;

/// A self-signed certificate for `names`, written as PEM files into `dir`.
pub(crate) fn self_signed(dir: &Path, stem: &str, names: &[&str]) -> Result<(PathBuf, PathBuf)> {
    let ck = rcgen::generate_simple_self_signed(
        names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )?;
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.signing_key.serialize_pem())?;
    Ok((cert, key))
}

/// `curl` over HTTPS to 127.0.0.1, as a browser would reach `https://HOST:PORT/PATH`.
/// Returns (http_version, status, body).
pub(crate) async fn curl(
    host: &str,
    port: u16,
    path: &str,
    ca: &Path,
    extra: &[&str],
) -> Result<(String, u16, String)> {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .await?;
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').context("curl output")?;
    let (version, code) = tail.split_once(' ').context("curl -w")?;
    Ok((version.to_owned(), code.parse()?, body.to_owned()))
}

async fn tls_broker(extra: &[&str]) -> Result<(TestBroker, PathBuf)> {
    let certs = tempfile::tempdir()?.keep();
    // OpenSSL will not match a wildcard directly under a single-label TLD, so name the host.
    let (cert, key) = self_signed(&certs, "edge", &["app.localhost", "localhost"])?;
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap_or(""),
        "--tls-key",
        key.to_str().unwrap_or(""),
    ];
    args.extend_from_slice(extra);
    let broker = TestBroker::start_with(Db::Sqlite, &args).await?;
    Ok((broker, cert))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_terminates_with_http1_and_http2() -> Result<()> {
    let (broker, ca) = tls_broker(&["--hsts-max-age", "300"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("app:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    let (v, code, body) =
        curl("app.localhost", broker.https_port, "/", &ca, &["--http1.1"]).await?;
    assert_eq!(
        (v.as_str(), code, body.as_str()),
        ("1.1", 200, "hello from A")
    );
    let (v, code, body) = curl("app.localhost", broker.https_port, "/", &ca, &["--http2"]).await?;
    assert_eq!(
        (v.as_str(), code, body.as_str()),
        ("2", 200, "hello from A")
    );
    // The origin learns the visitor came over HTTPS.
    let (_, _, headers) = curl(
        "app.localhost",
        broker.https_port,
        "/headers",
        &ca,
        &["--http2"],
    )
    .await?;
    assert!(headers.contains("x-forwarded-proto: https"), "{headers}");
    // A connection made for one tunnel's name does not carry another's requests (421); the
    // edge's own name (SNI `localhost`) is not tied to a tunnel.
    let (_, code, _) = curl(
        "app.localhost",
        broker.https_port,
        "/",
        &ca,
        &["-H", "Host: other.localhost"],
    )
    .await?;
    assert_eq!(code, 421);
    let (_, code, body) = curl(
        "localhost",
        broker.https_port,
        "/",
        &ca,
        &["-H", "Host: app.localhost"],
    )
    .await?;
    assert_eq!((code, body.as_str()), (200, "hello from A"));
    // HSTS on HTTPS responses.
    let (_, _, head) = curl("app.localhost", broker.https_port, "/", &ca, &["-I"]).await?;
    assert!(
        head.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=300"),
        "{head}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_to_https_except_acme_challenges() -> Result<()> {
    let (broker, _ca) = tls_broker(&[]).await?;
    let resp = get(&format!(
        "http://app.localhost:{}/a/b?c=1",
        broker.http_port
    ))
    .await?;
    assert_eq!(resp.status, 308);
    assert_eq!(
        resp.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("https://app.localhost:{}/a/b?c=1", broker.https_port).as_str())
    );
    let resp = get(&format!(
        "http://app.localhost:{}/.well-known/acme-challenge/nope",
        broker.http_port
    ))
    .await?;
    assert_eq!(resp.status, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_is_refused_promptly() -> Result<()> {
    // The broker has no certificate at all: handshakes fail with an alert, never hang.
    let broker = TestBroker::start().await?;
    let dir = tempfile::tempdir()?;
    let (ca, _) = self_signed(dir.path(), "x", &["nobody.localhost"])?;
    let started = std::time::Instant::now();
    let err = curl("nobody.localhost", broker.https_port, "/", &ca, &[])
        .await
        .err()
        .context("handshake should fail")?;
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    // A TLS alert from the broker, not a bare close, a reset or a timeout.
    assert!(format!("{err:#}").contains("alert"), "{err:#}");
    // Garbage instead of a ClientHello is dropped too.
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", broker.https_port)).await?;
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf)).await??;
    Ok(())
}

/// A slowloris on the TLS port: a ClientHello dribbled one byte every 200 ms never completes
/// and keeps the connection alive byte by byte, yet the broker closes it once the head
/// deadline (here 2 s) has passed since the connection began, not since the last byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbled_client_hello_is_cut_at_the_head_deadline() -> Result<()> {
    let (broker, _) = tls_broker(&["--header-timeout-secs", "2"]).await?;
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", broker.https_port)).await?;
    // A handshake record of 512 bytes announcing a ClientHello (TLS 1.2 legacy version), then
    // its random: all plausible, none of it enough to route by.
    sock.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .await?;
    let started = std::time::Instant::now();
    let mut sent = 0usize;
    let closed_after = loop {
        // The broker closing shows as a read of 0 bytes or an error (a reset once we write).
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), sock.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => bail!("the broker answered a ClientHello it has not had"),
            Err(_) => {}
        }
        if sock.write_all(&[0]).await.is_err() {
            break started.elapsed();
        }
        sent += 1;
        if started.elapsed() > Duration::from_secs(15) {
            bail!("still open after 15 s and {sent} dribbled bytes");
        }
    };
    assert!(
        closed_after >= Duration::from_millis(1800),
        "closed after {closed_after:?}, before the deadline"
    );
    assert!(sent >= 5, "the client kept sending ({sent} bytes)");
    println!("dribbled ClientHello cut after {closed_after:?} and {sent} bytes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passthrough_routes_by_sni_to_the_owners_certificate() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("owner.crt");
    let origin = Origin::start_tls_self_signed("owner's TLS", "secure.localhost", &ca).await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("secure:443:{}", origin.target())],
    )?;
    let url = ssh.url(0).await?;
    assert_eq!(
        url,
        format!("https://secure.localhost:{}", broker.https_port)
    );
    // curl trusts only the owner's certificate: the broker did not terminate.
    let (_, code, body) = curl("secure.localhost", broker.https_port, "/", &ca, &[]).await?;
    assert_eq!((code, body.as_str()), (200, "hello from owner's TLS"));
    ssh.line("TLS 127.0.0.1").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_tunnel_gets_a_public_port() -> Result<()> {
    let broker = TestBroker::start_with(Db::Sqlite, &["--tcp-ports", "21000-21999"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("raw").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("tcp:0:{}", origin.target())],
    )?;
    let url = ssh.url(0).await?;
    let port: u16 = url.rsplit(':').next().context("port")?.parse()?;
    assert!((21000..=21999).contains(&port), "{url}");
    assert!(url.starts_with("tcp://localhost:"), "{url}");
    // OpenSSH was told the real port.
    ssh.err_line(&format!("Allocated port {port}")).await?;
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    sock.write_all(b"GET / HTTP/1.1\r\nHost: whatever\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out);
    assert!(text.ends_with("hello from raw"), "{text}");
    // A name-less, Host-less protocol works the same: the bytes are not parsed.
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_operator_certificate_and_keeps_the_tunnels() -> Result<()> {
    let (broker, ca) = tls_broker(&[]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("app:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    let port = broker.https_port;
    let (_, status, _) = curl("app.localhost", port, "/", &ca, &["--http1.1"]).await?;
    assert_eq!(status, 200);
    // The operator renews the certificate in place (a new key: the old CA file no longer
    // verifies it) and sends SIGHUP, as `systemctl reload` does.
    let old_ca = ca.with_extension("old");
    std::fs::copy(&ca, &old_ca)?;
    let dir = ca.parent().context("cert dir")?;
    self_signed(dir, "edge", &["app.localhost", "localhost"])?;
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()?;
    assert!(hup.success());
    crate::harness::eventually(
        "the new certificate served",
        crate::harness::DEADLINE,
        || {
            let ca = ca.clone();
            async move {
                curl("app.localhost", port, "/", &ca, &["--http1.1"])
                    .await
                    .ok()
                    .filter(|(_, s, b)| *s == 200 && b == "hello from A")
            }
        },
    )
    .await?;
    // The old certificate is gone; the answer above came through the same ssh session, which
    // lived through both signals.
    assert!(
        curl("app.localhost", port, "/", &old_ca, &["--http1.1"])
            .await
            .is_err()
    );
    Ok(())
}

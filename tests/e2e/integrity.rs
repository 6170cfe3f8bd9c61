//! What the origin is told: exactly one Host, the routed one; forwarded headers it can trust;
//! no header smuggled past them; cookies confined to the tunnel; HTTP/2 visitors held to a few
//! upstream connections. Each case checks the visitor's answer and what reached the origin.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::client::{get, raw, status_of};
use crate::harness::{Db, Ssh, TestBroker};
use crate::origin::{Origin, SET_COOKIES};

const WAIT: Duration = Duration::from_secs(10);

/// A broker (with a certificate for `app.localhost` when `tls`), a tunnel `app` and its origin.
/// Returns the certificate's DER too, for an HTTPS client to trust.
async fn tunnel(tls: bool) -> Result<(TestBroker, Ssh, Origin, Vec<u8>)> {
    let ck = rcgen::generate_simple_self_signed(vec!["app.localhost".to_string()])?;
    let dir = tempfile::tempdir()?.keep();
    let (cert, key) = (dir.join("edge.crt"), dir.join("edge.key"));
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.signing_key.serialize_pem())?;
    let (cert, key) = (
        cert.to_str().context("path")?,
        key.to_str().context("path")?,
    );
    let args: &[&str] = if tls {
        &["--tls-cert", cert, "--tls-key", key]
    } else {
        &[]
    };
    let broker = TestBroker::start_with(Db::Sqlite, args).await?;
    let user = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &user,
        &["-R", &format!("app:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    Ok((broker, ssh, origin, ck.cert.der().to_vec()))
}

/// A raw HTTP/1.1 response: status, header lines (name lowercased) and body.
struct RawResp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawResp {
    fn parse(text: &str) -> Result<Self> {
        let status = status_of(text).with_context(|| format!("not a response: {text:?}"))?;
        let (head, body) = text.split_once("\r\n\r\n").context("no end of head")?;
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Self {
            status,
            headers,
            body: body.to_owned(),
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `req` on a fresh connection and parses the answer (an empty answer is an error).
async fn send_raw(port: u16, req: &str) -> Result<RawResp> {
    RawResp::parse(&raw(port, req.as_bytes(), WAIT).await?)
}

/// Every value the origin's `/headers` echo says it received for `name`, in order.
fn seen<'a>(echo: &'a str, name: &str) -> Vec<&'a str> {
    echo.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .collect()
}

fn forwarded_for_local(host: &str) -> String {
    format!("for=127.0.0.1;proto=http;host=\"{host}\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_absolute_form_host_must_name_the_authority() -> Result<()> {
    let (broker, _ssh, origin, _) = tunnel(false).await?;
    let p = broker.http_port;
    let host = format!("app.localhost:{p}");
    for other in [
        "evil.example",
        // A quote in Host once spilled into Forwarded as elements of its own.
        "x\";for=6.6.6.6;proto=https",
    ] {
        let req = format!(
            "GET http://{host}/headers HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n"
        );
        let resp = send_raw(p, &req).await?;
        assert_eq!(resp.status, 400, "{req:?} -> {}", resp.body);
        assert!(
            resp.body.contains("Host header names another host"),
            "{}",
            resp.body
        );
    }
    assert_eq!(origin.requests(), 0, "a refused request reached the origin");

    // The same host in another spelling is fine; the origin is told the routed authority.
    let resp = send_raw(
        p,
        &format!(
            "GET http://{host}/headers HTTP/1.1\r\nHost: APP.localhost.:1\r\nConnection: close\r\n\r\n"
        ),
    )
    .await?;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let echo = &resp.body;
    assert_eq!(seen(echo, "host"), [host.as_str()], "{echo}");
    assert_eq!(seen(echo, "x-forwarded-host"), [host.as_str()], "{echo}");
    assert_eq!(
        seen(echo, "forwarded"),
        [forwarded_for_local(&host)],
        "{echo}"
    );
    assert_eq!(origin.requests(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_duplicate_host_headers_are_refused() -> Result<()> {
    let (broker, _ssh, origin, _) = tunnel(false).await?;
    let p = broker.http_port;
    let host = format!("app.localhost:{p}");
    for (target, second) in [
        ("/headers".to_owned(), "evil.example"),
        ("/headers".to_owned(), host.as_str()),
        (format!("http://{host}/headers"), host.as_str()),
    ] {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nHost: {second}\r\nConnection: close\r\n\r\n"
        );
        let resp = send_raw(p, &req).await?;
        assert_eq!(resp.status, 400, "{req:?} -> {}", resp.body);
        assert!(resp.body.contains("more than one Host"), "{}", resp.body);
    }
    assert_eq!(origin.requests(), 0, "a refused request reached the origin");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_connection_cannot_strip_the_brokers_headers() -> Result<()> {
    let (broker, _ssh, origin, _) = tunnel(false).await?;
    let p = broker.http_port;
    let host = format!("app.localhost:{p}");
    // `Connection` may drop the visitor's own hop-by-hop headers, never the broker's.
    let resp = send_raw(
        p,
        &format!(
            "GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: close, host, x-forwarded-for, \
             x-forwarded-host, x-forwarded-proto, forwarded, x-real-ip, x-hop\r\nX-Hop: 1\r\n\
             X-Kept: 1\r\n\r\n"
        ),
    )
    .await?;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let echo = &resp.body;
    assert_eq!(seen(echo, "host"), [host.as_str()], "{echo}");
    assert_eq!(seen(echo, "x-forwarded-for"), ["127.0.0.1"], "{echo}");
    assert_eq!(seen(echo, "x-real-ip"), ["127.0.0.1"], "{echo}");
    assert_eq!(seen(echo, "x-forwarded-proto"), ["http"], "{echo}");
    assert_eq!(seen(echo, "x-forwarded-host"), [host.as_str()], "{echo}");
    assert_eq!(
        seen(echo, "forwarded"),
        [forwarded_for_local(&host)],
        "{echo}"
    );
    assert_eq!(seen(echo, "x-hop"), Vec::<&str>::new(), "{echo}");
    assert_eq!(seen(echo, "x-kept"), ["1"], "{echo}");
    assert_eq!(origin.requests(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_underscore_headers_are_dropped() -> Result<()> {
    let (broker, _ssh, origin, _) = tunnel(false).await?;
    let host = format!("app.localhost:{}", broker.http_port);
    // CGI and WSGI would read X_Real_IP as X-Real-IP.
    let resp = send_raw(
        broker.http_port,
        &format!(
            "GET /headers HTTP/1.1\r\nHost: {host}\r\nX_Forwarded_For: 6.6.6.6\r\n\
             X_Real_IP: 6.6.6.6\r\nX-Fine: 1\r\nConnection: close\r\n\r\n"
        ),
    )
    .await?;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let echo = &resp.body;
    assert!(
        echo.lines()
            .all(|l| !l.split_once(':').is_some_and(|(k, _)| k.contains('_'))),
        "{echo}"
    );
    assert_eq!(seen(echo, "x-forwarded-for"), ["127.0.0.1"], "{echo}");
    assert_eq!(seen(echo, "x-real-ip"), ["127.0.0.1"], "{echo}");
    assert_eq!(seen(echo, "x-fine"), ["1"], "{echo}");
    assert_eq!(origin.requests(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_connect_gets_405() -> Result<()> {
    let (broker, _ssh, origin, _) = tunnel(false).await?;
    let host = format!("app.localhost:{}", broker.http_port);
    let resp = send_raw(
        broker.http_port,
        &format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await?;
    assert_eq!(resp.status, 405, "{}", resp.body);
    let allow = resp.header("allow").context("no Allow header")?;
    assert!(
        allow.contains("GET") && !allow.contains("CONNECT"),
        "{allow}"
    );
    assert_eq!(origin.requests(), 0, "CONNECT reached the origin");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_an_unrequested_upgrade_is_a_502() -> Result<()> {
    let (broker, ssh, origin, _) = tunnel(false).await?;
    let host = format!("app.localhost:{}", broker.http_port);
    let resp = send_raw(
        broker.http_port,
        &format!("GET /switch HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await?;
    assert_eq!(resp.status, 502, "{:?} {}", resp.headers, resp.body);
    assert!(resp.header("upgrade").is_none(), "{:?}", resp.headers);
    assert!(resp.body.contains("switched protocols"), "{}", resp.body);
    assert_eq!(origin.requests(), 1);
    // The owner is told why.
    ssh.line("GET /switch 502").await?;
    // And the tunnel serves on.
    assert_eq!(get(&format!("http://{host}/")).await?.body, "hello from A");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_cookie_domains_are_confined_to_the_tunnel() -> Result<()> {
    let (broker, _ssh, origin, _) = tunnel(false).await?;
    let host = format!("app.localhost:{}", broker.http_port);
    // Cookies for the parent domain or another tenant become host-only; the tunnel's own
    // domain and the rest of each cookie are kept.
    let resp = get(&format!("http://{host}/set-cookies")).await?;
    assert_eq!((resp.status, resp.body.as_str()), (200, "cookies set"));
    let cookies: Vec<&str> = resp
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        cookies,
        [
            "sid=attacker; Path=/; HttpOnly",
            "other=1; Path=/",
            SET_COOKIES[2],
            SET_COOKIES[3],
            "parent=4;Max-Age=60",
        ]
    );
    assert_eq!(origin.requests(), 1);
    Ok(())
}

/// An HTTP/2 connection (TLS, ALPN h2) to the broker's HTTPS port for `app.localhost`.
async fn h2_client(port: u16, ca: &[u8]) -> Result<SendRequest<Empty<Bytes>>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca.to_vec()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("app.localhost".try_into()?, sock)
        .await?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        bail!("the broker did not agree to h2");
    }
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// Sends `req` over h2: (status, body).
async fn h2_send(
    send: &mut SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
) -> Result<(u16, String)> {
    send.ready().await?;
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .context("h2 response timed out")??;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_http2_cookie_fields_are_joined() -> Result<()> {
    let (broker, _ssh, origin, ca) = tunnel(true).await?;
    let authority = format!("app.localhost:{}", broker.https_port);
    let mut h2 = h2_client(broker.https_port, &ca).await?;
    // h2 sends each cookie as its own field; an HTTP/1.1 origin gets them as one.
    let req = Request::get(format!("https://{authority}/headers"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::new())?;
    let (status, echo) = h2_send(&mut h2, req).await?;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(seen(&echo, "cookie"), ["a=1; b=2"], "{echo}");
    // The routed :authority is its Host.
    assert_eq!(seen(&echo, "host"), [authority.as_str()], "{echo}");
    assert_eq!(seen(&echo, "x-forwarded-host"), [authority.as_str()]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"]);
    assert_eq!(origin.requests(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_http2_host_must_name_the_authority() -> Result<()> {
    let (broker, _ssh, origin, ca) = tunnel(true).await?;
    let authority = format!("app.localhost:{}", broker.https_port);
    let url = format!("https://{authority}/headers");
    let mut h2 = h2_client(broker.https_port, &ca).await?;
    let req = Request::get(&url)
        .header("host", "evil.example")
        .body(Empty::new())?;
    let (status, body) = h2_send(&mut h2, req).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Host header names another host"), "{body}");
    assert_eq!(origin.requests(), 0, "a refused request reached the origin");

    // One naming the same host is fine, and the origin gets the routed one, once.
    let req = Request::get(&url)
        .header("host", "APP.localhost")
        .body(Empty::new())?;
    let (status, echo) = h2_send(&mut h2, req).await?;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(seen(&echo, "host"), [authority.as_str()], "{echo}");
    assert_eq!(origin.requests(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_http2_fan_out_is_capped() -> Result<()> {
    /// The edge's per-visitor-connection cap (`MAX_IN_FLIGHT` in crates/edge/src/pool.rs).
    const CAP: usize = 8;
    const REQUESTS: usize = 60;
    let (broker, _ssh, origin, ca) = tunnel(true).await?;
    let url = format!("https://app.localhost:{}/slow", broker.https_port);
    let h2 = h2_client(broker.https_port, &ca).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        let mut h2 = h2.clone();
        let req = Request::get(&url).body(Empty::new())?;
        tasks.spawn(async move { h2_send(&mut h2, req).await });
    }
    // They all succeed: past the cap, requests wait for an upstream connection.
    while let Some(done) = tasks.join_next().await {
        let (status, body) = done??;
        assert_eq!((status, body.as_str()), (200, "slow"));
    }
    assert_eq!(origin.requests(), REQUESTS);
    let max = origin.max_open_connections();
    assert!(
        (2..=CAP).contains(&max),
        "one visitor connection had {max} upstream connections open at once"
    );
    Ok(())
}

/// Every status line in a raw response stream (pipelined answers included).
fn statuses(text: &str) -> Vec<u16> {
    text.split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|s| s.get(..3)?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_smuggling_attempts_are_refused_or_framed_once() -> Result<()> {
    let (broker, _ssh, origin, _) = tunnel(false).await?;
    let p = broker.http_port;
    let host = format!("app.localhost:{p}");
    // Refused outright, before anything reaches the origin.
    for (what, req) in [
        (
            "two different Content-Lengths",
            format!(
                "POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde"
            ),
        ),
        (
            "an obs-folded header",
            format!(
                "GET /headers HTTP/1.1\r\nHost: {host}\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n"
            ),
        ),
    ] {
        let before = origin.requests();
        let text = raw(p, req.as_bytes(), WAIT).await?;
        assert_eq!(statuses(&text), [400], "{what}: {text}");
        assert_eq!(origin.requests(), before, "{what} reached the origin");
    }
    // Content-Length and a chunked Transfer-Encoding at once, with a request hidden in the
    // body: the encoding wins (RFC 9112 §6.3), the origin gets one POST with an empty body,
    // and the connection is closed after the answer, so the hidden GET is never read.
    let before = origin.requests();
    let text = raw(
        p,
        format!(
            "POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /headers HTTP/1.1\r\nHost: {host}\r\n\r\n"
        )
        .as_bytes(),
        WAIT,
    )
    .await?;
    assert_eq!(statuses(&text), [200], "{text}");
    let resp = RawResp::parse(&text)?;
    assert_eq!(resp.header("connection"), Some("close"), "{text}");
    assert!(resp.body.starts_with("0 "), "the origin saw a body: {text}");
    assert_eq!(origin.requests(), before + 1, "{text}");
    // Bare LF line ends are read as line ends, and the origin gets exactly the one request,
    // with exactly the routed Host.
    let before = origin.requests();
    let text = raw(
        p,
        format!("GET /headers HTTP/1.1\nHost: {host}\nConnection: close\n\n").as_bytes(),
        WAIT,
    )
    .await?;
    assert_eq!(statuses(&text), [200], "{text}");
    let resp = RawResp::parse(&text)?;
    assert_eq!(seen(&resp.body, "host"), [host.as_str()], "{}", resp.body);
    assert_eq!(origin.requests(), before + 1);
    Ok(())
}

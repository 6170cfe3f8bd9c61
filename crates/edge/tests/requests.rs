//! The edge's request log and live counters, driven by real clients (hyper HTTP/1.1, hyper
//! HTTP/2 over rustls, raw sockets) against `warren_edge::run` / `run_tls`, with a registry
//! whose tunnel endpoint opens TCP connections to an origin in this process.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};
use warren_edge::{Edge, EdgeSettings, IpNet, TcpPorts};
use warren_registry::{
    BoxStream, Endpoint, OpenError, PortAllocator, Registry, RequestEntry, Route, RouteKind,
    SUBSCRIBER_BACKLOG, tcp_name,
};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Duration = Duration::from_secs(10);

/// Size of `/big`: more than loopback socket buffers hold, so a visitor that stops reading
/// cannot have been sent all of it.
const BIG: usize = 64 << 20;
const CHUNK: &[u8] = &[b'x'; 64 * 1024];

/// A tunnel endpoint that connects to `origin` directly (what the SSH session does through a
/// `forwarded-tcpip` channel).
struct Direct(SocketAddr);

#[async_trait::async_trait]
impl Endpoint for Direct {
    async fn open(&self, _visitor: SocketAddr) -> Result<BoxStream, OpenError> {
        let s = TcpStream::connect(self.0)
            .await
            .map_err(|e| OpenError::Refused(e.to_string()))?;
        Ok(Box::pin(s))
    }
    fn notify(&self, _line: String) {}
    fn describe(&self) -> String {
        self.0.to_string()
    }
}

type OriginBody = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<OriginBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp
}

/// `/big`'s body: BIG bytes in 64 KiB frames, made as they are asked for.
struct Chunks(usize);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        self.0 -= CHUNK.len();
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(CHUNK)))))
    }
}

/// The tunnel owner's service: `/hello`, `/len` (answers the request body's length), `/big`,
/// `/slow` (answers after a minute), `/ws` (an upgrade that echoes), 404 otherwise.
async fn origin_service(mut req: Request<Incoming>) -> Result<Response<OriginBody>, Infallible> {
    Ok(match req.uri().path() {
        "/hello" => text(StatusCode::OK, "hello"),
        "/len" => {
            let n = req
                .into_body()
                .collect()
                .await
                .map_or(0, |b| b.to_bytes().len());
            text(StatusCode::OK, format!("got {n}"))
        }
        "/big" => Response::new(Chunks(BIG).boxed()),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            text(StatusCode::OK, "late")
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = upgrade.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                }
            });
            let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, "");
            let h = resp.headers_mut();
            h.insert("connection", "upgrade".parse().expect("value"));
            h.insert("upgrade", "websocket".parse().expect("value"));
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "none"),
    })
}

async fn start_origin() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), hyper::service::service_fn(origin_service))
                    .with_upgrades(),
            );
        }
    });
    Ok(addr)
}

/// An edge with the tunnel `app` (HTTP) bound to a fresh origin.
struct Fixture {
    registry: Arc<Registry>,
    route: Arc<Route>,
    http: SocketAddr,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
    _stop: DropGuard,
}

async fn fixture(
    entries: usize,
    trusted: &[&str],
) -> Result<Fixture, Box<dyn std::error::Error + Send + Sync>> {
    let origin = start_origin().await?;
    let registry = Arc::new(Registry::new(Duration::from_secs(60), 16).with_request_log(entries));
    let (route, _) = registry.bind("app", 1, 1, RouteKind::Http, Arc::new(Direct(origin)))?;
    let settings = EdgeSettings {
        trusted_proxies: trusted
            .iter()
            .map(|s| s.parse::<IpNet>())
            .collect::<Result<_, _>>()?,
        ..EdgeSettings::default()
    };
    let edge = Arc::new(Edge::new(settings, registry.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let http = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(warren_edge::run(listener, shutdown.clone(), edge.clone()));
    Ok(Fixture {
        registry,
        route,
        http,
        edge,
        _stop: shutdown.clone().drop_guard(),
        shutdown,
    })
}

impl Fixture {
    /// An HTTP/1.1 keep-alive connection to the edge.
    async fn client(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::Error> {
        let s = TcpStream::connect(self.http)
            .await
            .expect("connect to the edge");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
        tokio::spawn(conn);
        Ok(send)
    }

    fn entries(&self) -> Vec<Arc<RequestEntry>> {
        self.registry
            .request_log("app")
            .map(|l| l.recent())
            .unwrap_or_default()
    }

    /// Waits until the log holds `n` entries, and returns them.
    async fn wait_entries(&self, n: usize) -> Vec<Arc<RequestEntry>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let entries = self.entries();
            if entries.len() >= n {
                return entries;
            }
            assert!(
                Instant::now() < deadline,
                "{} entries of {n} after {WAIT:?}: {entries:?}",
                entries.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn request(method: &str, uri: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "app.localhost")
        .header("user-agent", "warren-test/1.0")
        .body(Full::new(Bytes::from_static(body)))
        .expect("request")
}

async fn send(
    client: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> (u16, Bytes) {
    client.ready().await.expect("ready");
    let resp = tokio::time::timeout(WAIT, client.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

/// Polls `f` until it holds (or panics after WAIT with `what`).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[tokio::test]
async fn each_request_is_recorded_with_its_redacted_path_status_and_bytes() -> TestResult {
    let f = fixture(1000, &[]).await?;
    let mut live = f.registry.subscribe("app").expect("app has a log");
    let t0 = now_ms();
    let mut c = f.client().await?;
    let (status, body) = send(&mut c, request("GET", "/hello?q=secret&page=2", b"")).await;
    assert_eq!((status, &body[..]), (200, &b"hello"[..]));
    let (status, body) = send(&mut c, request("POST", "/len?token=abc", &[7; 1000])).await;
    assert_eq!((status, &body[..]), (200, &b"got 1000"[..]));
    let (status, _) = send(&mut c, request("DELETE", "/nothing?a&=x&b=1&&c", b"")).await;
    assert_eq!(status, 404);

    let entries = f.wait_entries(3).await;
    let e = &entries[0];
    assert_eq!(
        (&e.method[..], &e.path[..], e.status),
        ("GET", "/hello?q=…&page=…", 200)
    );
    assert_eq!((e.bytes_in, e.bytes_out, e.complete), (0, 5, true));
    assert_eq!(
        (e.visitor, &e.user_agent[..]),
        (LOCALHOST, "warren-test/1.0")
    );
    assert!(e.at_ms >= t0 && e.at_ms <= now_ms(), "{e:?}");
    assert!(e.duration < WAIT, "{e:?}");
    let e = &entries[1];
    assert_eq!(
        (&e.method[..], &e.path[..], e.status),
        ("POST", "/len?token=…", 200)
    );
    assert_eq!((e.bytes_in, e.bytes_out), (1000, 8));
    let e = &entries[2];
    assert_eq!(
        (&e.method[..], &e.path[..], e.status),
        ("DELETE", "/nothing?a&=…&b=…&&c", 404)
    );
    assert!(
        !entries
            .iter()
            .any(|e| e.path.contains("secret") || e.path.contains("abc"))
    );

    // A subscriber got the same entries, in order, as they were recorded.
    for want in &entries {
        let got = tokio::time::timeout(WAIT, live.recv()).await??;
        assert_eq!(got, *want);
    }

    // The route's live counters: three requests, their bodies, and this one visitor connection.
    let stats = f.route.stats();
    assert_eq!(
        (stats.requests, stats.bytes_in, stats.bytes_out),
        (3, 1000, 5 + 8 + 4)
    );
    assert_eq!((stats.connections, stats.max_connections), (1, 16));
    drop(c);
    eventually("the visitor's slot is given back", || {
        f.route.stats().connections == 0
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn the_log_keeps_the_last_n_and_none_when_off() -> TestResult {
    let f = fixture(3, &[]).await?;
    let mut c = f.client().await?;
    for i in 0..5 {
        send(&mut c, request("GET", &format!("/hello?i={i}&n{i}"), b"")).await;
    }
    eventually("five entries were recorded", || {
        f.entries()
            .last()
            .is_some_and(|e| e.path == "/hello?i=…&n4")
    })
    .await;
    let paths: Vec<_> = f.entries().iter().map(|e| e.path.clone()).collect();
    assert_eq!(paths, ["/hello?i=…&n2", "/hello?i=…&n3", "/hello?i=…&n4"]);

    // Recording off: no log, but the counters still count.
    let off = fixture(0, &[]).await?;
    assert!(off.registry.request_log("app").is_none());
    let mut c = off.client().await?;
    send(&mut c, request("POST", "/len", &[1; 10])).await;
    let stats = off.route.stats();
    assert_eq!(
        (stats.requests, stats.bytes_in, stats.bytes_out),
        (1, 10, 6)
    );
    Ok(())
}

#[tokio::test]
async fn the_visitor_behind_a_trusted_proxy_is_the_one_it_names() -> TestResult {
    let forwarded = |path: &str| {
        let mut req = request("GET", path, b"");
        req.headers_mut().insert(
            "x-forwarded-for",
            "6.6.6.6, 198.51.100.7".parse().expect("value"),
        );
        req
    };
    let f = fixture(10, &["127.0.0.0/8"]).await?;
    let mut c = f.client().await?;
    send(&mut c, forwarded("/hello")).await;
    assert_eq!(
        f.wait_entries(1).await[0].visitor,
        "198.51.100.7".parse::<IpAddr>()?
    );

    // The same headers from a peer nobody trusts name nobody.
    let f = fixture(10, &["10.0.0.0/8"]).await?;
    let mut c = f.client().await?;
    send(&mut c, forwarded("/hello")).await;
    assert_eq!(f.wait_entries(1).await[0].visitor, LOCALHOST);
    Ok(())
}

#[tokio::test]
async fn a_visitor_who_leaves_is_recorded_with_what_was_sent() -> TestResult {
    let f = fixture(10, &[]).await?;
    // Mid-body: the head and a little of the body, then gone.
    let mut c = f.client().await?;
    c.ready().await?;
    let resp = c.send_request(request("GET", "/big", b"")).await?;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0;
    while got < 256 * 1024 {
        match body.frame().await {
            Some(frame) => got += frame?.data_ref().map_or(0, |d| d.len()),
            None => break,
        }
    }
    drop((body, c));
    let e = f.wait_entries(1).await[0].clone();
    assert_eq!((e.status, e.complete), (200, false), "{e:?}");
    assert!(
        e.bytes_out >= got as u64 && e.bytes_out < BIG as u64,
        "{} bytes out",
        e.bytes_out
    );

    // Before any answer: the origin is still thinking when the visitor closes.
    let mut s = TcpStream::connect(f.http).await?;
    s.write_all(b"GET /slow?x=1 HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    let e = f.wait_entries(2).await[1].clone();
    assert_eq!(
        (&e.path[..], e.status, e.bytes_out, e.complete),
        ("/slow?x=…", 499, 0, false)
    );
    Ok(())
}

#[tokio::test]
async fn an_upgraded_connection_is_one_entry_with_the_bytes_spliced() -> TestResult {
    let f = fixture(10, &[]).await?;
    let mut s = TcpStream::connect(f.http).await?;
    s.write_all(
        b"GET /ws?room=42 HTTP/1.1\r\nHost: app.localhost\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nUser-Agent: ws-test\r\n\r\n",
    )
    .await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    // Spliced: nothing is recorded until the connection ends, but the counters move.
    s.write_all(b"0123456789").await?;
    let mut echo = [0u8; 10];
    s.read_exact(&mut echo).await?;
    assert_eq!(&echo, b"0123456789");
    eventually("the splice's bytes are counted live", || {
        let st = f.route.stats();
        st.bytes_in == 10 && st.bytes_out == 10
    })
    .await;
    assert!(f.entries().is_empty());
    s.write_all(b"abc").await?;
    s.shutdown().await?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await?;
    assert_eq!(rest, b"abc");
    let entries = f.wait_entries(1).await;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        (&e.path[..], e.status, e.bytes_in, e.bytes_out, e.complete),
        ("/ws?room=…", 101, 13, 13, true)
    );
    assert_eq!(e.user_agent, "ws-test");
    Ok(())
}

#[tokio::test]
async fn a_subscriber_that_never_reads_does_not_hold_up_visitors() -> TestResult {
    let f = fixture(1000, &[]).await?;
    let mut stuck = f.registry.subscribe("app").expect("log");
    let mut c = f.client().await?;
    let n = SUBSCRIBER_BACKLOG + 100;
    for _ in 0..n {
        let (status, _) = send(&mut c, request("GET", "/hello", b"")).await;
        assert_eq!(status, 200);
    }
    f.wait_entries(n).await;
    match stuck.try_recv() {
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(lost)) => {
            assert_eq!(lost, 100)
        }
        other => panic!("expected the subscriber to have lagged: {other:?}"),
    }
    Ok(())
}

/// A self-signed certificate for `*.localhost` as a rustls server config, and its DER for a
/// client to trust.
fn tls_config(
    alpn: &[&[u8]],
) -> Result<(Arc<rustls::ServerConfig>, Vec<u8>), Box<dyn std::error::Error + Send + Sync>> {
    let ck = rcgen::generate_simple_self_signed(vec![
        "app.localhost".to_string(),
        "pt.localhost".to_string(),
    ])?;
    let der = ck.cert.der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der())?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![der.clone().into()], key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), der))
}

async fn tls_connect(
    port: u16,
    name: &str,
    ca: &[u8],
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Box<dyn std::error::Error + Send + Sync>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca.to_vec()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let sock = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from(name.to_owned())?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, sock)
        .await?)
}

#[tokio::test]
async fn https_requests_over_http2_are_recorded() -> TestResult {
    let f = fixture(10, &[]).await?;
    let (config, ca) = tls_config(&[b"h2", b"http/1.1"])?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(warren_edge::run_tls(
        listener,
        f.shutdown.clone(),
        f.edge.clone(),
        config,
    ));
    let tls = tls_connect(port, "app.localhost", &ca, &[b"h2"]).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("https://app.localhost/hello?code=1234")
        .header("user-agent", "h2-test")
        .body(Empty::<Bytes>::new())?;
    let resp = tokio::time::timeout(WAIT, h2.send_request(req)).await??;
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.into_body().collect().await?.to_bytes()[..], b"hello");
    let e = f.wait_entries(1).await[0].clone();
    assert_eq!(
        (&e.method[..], &e.path[..], e.status, e.bytes_out),
        ("GET", "/hello?code=…", 200, 5)
    );
    assert_eq!(
        (e.visitor, &e.user_agent[..], e.complete),
        (LOCALHOST, "h2-test", true)
    );
    Ok(())
}

/// An echo server: every byte back, until the peer closes.
async fn echo(s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) {
    let (mut r, mut w) = tokio::io::split(s);
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

#[tokio::test]
async fn passthrough_and_tcp_tunnels_count_bytes_and_connections_as_they_go() -> TestResult {
    let f = fixture(10, &[]).await?;

    // TLS passthrough: the owner's service terminates TLS and echoes.
    let (config, ca) = tls_config(&[])?;
    let owner = TcpListener::bind("127.0.0.1:0").await?;
    let owner_addr = owner.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = owner.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    echo(tls).await;
                }
            });
        }
    });
    let (pt, _) = f.registry.bind(
        "pt",
        1,
        1,
        RouteKind::TlsPassthrough,
        Arc::new(Direct(owner_addr)),
    )?;
    assert!(
        pt.request_log().is_none(),
        "passthrough has no HTTP requests to log"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(warren_edge::run_tls(
        listener,
        f.shutdown.clone(),
        f.edge.clone(),
        config,
    ));
    let mut tls = tls_connect(port, "pt.localhost", &ca, &[]).await?;
    tls.write_all(b"ping").await?;
    let mut back = [0u8; 4];
    tls.read_exact(&mut back).await?;
    assert_eq!(&back, b"ping");
    // While it is open: one connection, and the handshake plus the data both ways counted.
    eventually("passthrough bytes counted live", || {
        let st = pt.stats();
        st.connections == 1 && st.requests == 1 && st.bytes_in > 4 && st.bytes_out > 4
    })
    .await;
    drop(tls);
    eventually("the passthrough slot is given back", || {
        pt.stats().connections == 0
    })
    .await;

    // Raw TCP on a public port.
    let echo_listener = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo_listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = echo_listener.accept().await {
            tokio::spawn(echo(s));
        }
    });
    let free = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let ports = TcpPorts::new(
        LOCALHOST,
        free..=free,
        "localhost".into(),
        f.registry.clone(),
        f.shutdown.clone(),
    );
    let port = ports.allocate(Some(free))?;
    let (tcp, _) = f.registry.bind(
        &tcp_name(port),
        1,
        1,
        RouteKind::Tcp,
        Arc::new(Direct(echo_addr)),
    )?;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(&[5; 1000]).await?;
    let mut back = [0u8; 1000];
    s.read_exact(&mut back).await?;
    eventually("tcp bytes counted live", || {
        let st = tcp.stats();
        (st.connections, st.requests, st.bytes_in, st.bytes_out) == (1, 1, 1000, 1000)
    })
    .await;
    drop(s);
    eventually("the tcp slot is given back", || {
        tcp.stats().connections == 0
    })
    .await;
    // The HTTP tunnel beside them saw none of it.
    assert_eq!(f.route.stats().bytes_in, 0);
    Ok(())
}

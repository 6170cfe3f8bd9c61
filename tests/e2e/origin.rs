//! The tunnel owner's local service: a small hyper server with a few useful routes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// Byte `i` of the deterministic test payload.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7) % 251) as u8
}

/// A chunk of the payload starting at `offset`.
pub fn chunk(offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|j| pattern(offset + j))
        .collect::<Vec<u8>>()
        .into()
}

/// SHA-256 of the first `n` payload bytes.
pub fn pattern_sha256(n: u64) -> String {
    let mut h = Sha256::new();
    let mut off = 0;
    while off < n {
        let len = (n - off).min(64 * 1024) as usize;
        h.update(chunk(off, len));
        off += len as u64;
    }
    hex::encode(h.finalize())
}

pub struct Origin {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
    /// What it has seen (connections: plain origins only).
    stats: Arc<Stats>,
}

/// Counters an origin keeps, for tests to assert what reached it.
#[derive(Default)]
struct Stats {
    /// Connections open right now.
    open: AtomicUsize,
    /// The most connections that were ever open at once.
    max_open: AtomicUsize,
    /// Requests it has received.
    requests: AtomicUsize,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// Starts an origin whose `/` answers `hello from TAG`.
    pub async fn start(tag: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let tag = tag.to_owned();
        let stats = Arc::new(Stats::default());
        let counter = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, peer)) = listener.accept().await else {
                    continue;
                };
                let tag = tag.clone();
                let counter = counter.clone();
                let now = counter.open.fetch_add(1, Ordering::SeqCst) + 1;
                counter.max_open.fetch_max(now, Ordering::SeqCst);
                tokio::spawn(async move {
                    let seen = counter.clone();
                    let svc = hyper::service::service_fn(move |req| {
                        serve(tag.clone(), peer, seen.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .with_upgrades()
                        .await;
                    counter.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(Self { port, task, stats })
    }

    /// How many connections are open to this origin now.
    pub fn open_connections(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open to this origin at once.
    pub fn max_open_connections(&self) -> usize {
        self.stats.max_open.load(Ordering::SeqCst)
    }

    /// How many requests reached this origin.
    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Like [`Origin::start`], but speaking TLS with its own certificate (for passthrough).
    pub async fn start_tls(
        tag: &str,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let tag = tag.to_owned();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let stats = Arc::new(Stats::default());
        let counters = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, peer)) = listener.accept().await else {
                    continue;
                };
                let tag = tag.clone();
                let acceptor = acceptor.clone();
                let seen = counters.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        serve(tag.clone(), peer, seen.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(Self { port, task, stats })
    }

    /// [`Origin::start_tls`] with a new self-signed certificate for `host` (an owner's own,
    /// for TLS passthrough); its PEM is written to `cert` for a client to trust.
    pub async fn start_tls_self_signed(
        tag: &str,
        host: &str,
        cert: &std::path::Path,
    ) -> Result<Self> {
        let ck = rcgen::generate_simple_self_signed(vec![host.to_string()])?;
        std::fs::write(cert, ck.cert.pem())?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![ck.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der())
                .map_err(anyhow::Error::msg)?,
        )?;
        Self::start_tls(tag, Arc::new(config)).await
    }

    pub fn target(&self) -> String {
        format!("localhost:{}", self.port)
    }
}

/// What `/set-cookies` answers with: cookies for the parent domain, another tenant, the
/// tunnel itself (any spelling), and none.
pub const SET_COOKIES: [&str; 5] = [
    "sid=attacker; Domain=localhost; Path=/; HttpOnly",
    "other=1; Path=/; domain=.bank.localhost",
    "own=2; Domain=.APP.localhost; Secure",
    "host_only=3; Path=/",
    "parent=4;Domain=.localhost.;Max-Age=60",
];

fn text(s: impl Into<String>) -> Response<Body> {
    Response::new(Full::new(Bytes::from(s.into())).boxed())
}

async fn serve(
    tag: String,
    _peer: SocketAddr,
    stats: Arc<Stats>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    if path == "/" {
        return Ok(text(format!("hello from {tag}")));
    }
    if path == "/close" {
        // An origin that closes after each answer (HTTP/1.0 servers, `python -m http.server`):
        // the owner's side ends each SSH channel.
        let mut r = text(format!("hello from {tag}"));
        r.headers_mut()
            .insert("connection", "close".parse().expect("hv"));
        return Ok(r);
    }
    if path == "/slow" {
        // Long enough that concurrent requests overlap at the origin; `?ms=N` for longer.
        let ms = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(text("slow"));
    }
    if path == "/switch" {
        // A protocol switch nobody asked for.
        let mut r = Response::new(Full::new(Bytes::new()).boxed());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("upgrade", "surprise".parse().expect("hv"));
        r.headers_mut()
            .insert("connection", "upgrade".parse().expect("hv"));
        return Ok(r);
    }
    if path == "/set-cookies" {
        let mut r = text("cookies set");
        for c in SET_COOKIES {
            r.headers_mut().append("set-cookie", c.parse().expect("hv"));
        }
        return Ok(r);
    }
    if path == "/headers" {
        let mut out = String::new();
        for (k, v) in req.headers() {
            out.push_str(&format!(
                "{}: {}\n",
                k,
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
        return Ok(text(out));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: u64 = n.parse().unwrap_or(0);
        let stream = futures::stream::unfold(0u64, move |off| async move {
            if off >= n {
                return None;
            }
            let len = (n - off).min(64 * 1024) as usize;
            Some((
                Ok::<_, Infallible>(Frame::data(chunk(off, len))),
                off + len as u64,
            ))
        });
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut().insert("content-length", n.into());
        return Ok(resp);
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut h = Sha256::new();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        len += d.len() as u64;
                        h.update(d);
                    }
                }
                Err(_) => break,
            }
        }
        return Ok(text(format!("{len} {}", hex::encode(h.finalize()))));
    }
    if path == "/ws" {
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            let mut r = text("not a websocket request");
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(r);
        };
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = upgrade.await {
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(io),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut r = Response::new(Full::new(Bytes::new()).boxed());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("upgrade", "websocket".parse().expect("hv"));
        r.headers_mut()
            .insert("connection", "upgrade".parse().expect("hv"));
        r.headers_mut()
            .insert("sec-websocket-accept", accept.parse().expect("hv"));
        return Ok(r);
    }
    let mut r = text("no such path");
    *r.status_mut() = StatusCode::NOT_FOUND;
    Ok(r)
}

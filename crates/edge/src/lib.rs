//! The public edge: where visitors arrive.
//!
//! Each visitor connection is served by hyper as HTTP/1.1. Every request is parsed, routed by
//! its Host through the [registry](warren_registry) to a live tunnel, given `X-Forwarded-*` and
//! `Forwarded` headers, logged to the tunnel owner's session and counted. Requests on one visitor
//! connection reuse one upstream connection (a `forwarded-tcpip` channel) to the owner's
//! service; bodies stream both ways; `Upgrade` (WebSocket) responses are spliced byte for byte
//! with no idle cut. Failures are answered with a page that says whose side failed. Each
//! name's access rules (IP lists, basic auth, share links) are enforced first (`access`).
#![warn(missing_docs)]

/// The span of one visitor connection (`name` tells the listener). `tenant`, `tunnel` and
/// `visitor` start empty and are recorded once, when the connection's route is known
/// (`ConnState::describe`); recording them per request would grow a keep-alive span.
macro_rules! visitor_span {
    ($name:literal, $peer:expr) => {
        tracing::info_span!(
            $name,
            peer = %$peer,
            tenant = tracing::field::Empty,
            tunnel = tracing::field::Empty,
            visitor = tracing::field::Empty
        )
    };
}

mod access;
mod admit;
mod drain;
mod headers;
mod host;
mod io;
mod meter;
mod pages;
mod pool;
mod proxy;
mod record;
mod rewind;
mod tcp;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};
use warren_accept::Acceptor;
pub use warren_accept::ProxySources;
use warren_admit::{Admission, Throttle};
use warren_metrics::{Limit, Listener, Metrics};
use warren_registry::{Lookup, Registry};
use warren_shards::Shards;

pub use access::{Redeemed, SHARE_COOKIE, ShareRedeemer};
pub use host::{HostError, Target, classify_host};
pub use ipnet::IpNet;
pub use tcp::TcpPorts;
pub use tls::{Hello, run_tls};

/// The most hyper reads from a visitor at once. Request heads are bounded separately
/// (`max_header_bytes`); this only lets a large upload be read in large pieces: fewer reads,
/// and fewer window updates waking the visitor's sender.
const READ_BUF_MAX: usize = 256 * 1024;

/// The edge's part of the broker configuration.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Base domain; `NAME.domain` routes to the tunnel `NAME`.
    pub domain: String,
    /// Request head size limit in bytes (hyper answers 431 past it; at least 8192).
    pub max_header_bytes: usize,
    /// Header count limit (431 past it).
    pub max_headers: usize,
    /// A visitor that has not sent a complete request head by then gets 408.
    pub header_read_timeout: Duration,
    /// An origin that has not sent its response head by then gets the visitor a 504 (the
    /// body may then stream for as long as it likes).
    pub origin_timeout: Duration,
    /// Peers whose `X-Forwarded-*` / `Forwarded` headers are kept and extended; everyone
    /// else's are replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// Load balancers that start each connection with a PROXY protocol header naming the
    /// visitor (`proxy_protocol_from`): the visitor is then who the limits, rules and
    /// `X-Forwarded-For` see.
    pub proxy_sources: ProxySources,
    /// When set, plain HTTP requests are redirected (308) to HTTPS on this public port, except
    /// ACME HTTP-01 challenges.
    pub redirect_https_port: Option<u16>,
    /// `Strict-Transport-Security: max-age=N` on HTTPS responses when set.
    pub hsts_max_age: Option<u64>,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            domain: "localhost".into(),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(20),
            origin_timeout: Duration::from_secs(300),
            trusted_proxies: Vec::new(),
            proxy_sources: ProxySources::default(),
            redirect_https_port: None,
            hsts_max_age: None,
        }
    }
}

/// Answers ACME HTTP-01 challenges: token → key authorization.
pub type Http01Responder = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Whether a certificate is served for a host name (lock-free: the TLS resolver's map).
pub type CertificateCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What every visitor connection shares.
pub struct Edge {
    pub(crate) settings: EdgeSettings,
    pub(crate) registry: Arc<Registry>,
    pub(crate) acme_http01: Option<Http01Responder>,
    pub(crate) shards: Arc<Shards>,
    pub(crate) access: access::Gate,
    pub(crate) certified: Option<CertificateCheck>,
    pub(crate) visitors: drain::Visitors,
    /// What the edge counts: requests by status class, their latency, connections, limits.
    pub(crate) metrics: Arc<Metrics>,
    /// Which new visitor connections are taken on (see [`Edge::with_admission`]).
    pub(crate) admission: Arc<Admission>,
    /// Refusals are logged at most once in a while, with the count since.
    pub(crate) refusals_logged: Throttle,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Edge {
    /// An edge routing through `registry`.
    pub fn new(settings: EdgeSettings, registry: Arc<Registry>) -> Self {
        Self {
            settings,
            registry,
            acme_http01: None,
            shards: Arc::new(Shards::inline()),
            access: access::Gate::default(),
            certified: None,
            visitors: drain::Visitors::default(),
            metrics: Arc::new(Metrics::noop()),
            admission: Arc::new(Admission::unlimited()),
            refusals_logged: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// Limits visitor connections at accept: per IP at once, per IP per second, and in all
    /// while they have sent no request head (or ClientHello) yet. Give [`TcpPorts`] the same
    /// one, so that one IP's count spans every listener.
    pub fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = admission;
        self
    }

    /// Counts requests, visitor connections and limit hits into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Answers share links (`/.well-known/warren-share/TOKEN`) by redeeming them through
    /// `redeemer`, and signs (and checks) the cookies they give with `key`, which every node
    /// sharing the database must hold.
    pub fn with_shares(mut self, redeemer: Arc<dyn ShareRedeemer>, key: Vec<u8>) -> Self {
        self.access.with_shares(redeemer, key);
        self
    }

    /// Serves each visitor connection on the tunnel thread of the tunnel it names (see
    /// `warren-shards`), once its first request head or ClientHello says which.
    pub fn with_shards(mut self, shards: Arc<Shards>) -> Self {
        self.shards = shards;
        self
    }

    /// The tunnel thread of the live tunnel `host` names, if any.
    pub(crate) fn shard_for(&self, host: &[u8]) -> Option<usize> {
        match classify_host(host, &self.settings.domain) {
            Ok((Target::Tunnel(label), _)) => self.shard_of(&label),
            Ok((Target::Elsewhere(host), _)) => self.shard_of(&self.registry.alias(&host)?),
            Err(_) => None,
        }
    }

    /// The tunnel thread of the live tunnel `label`, if any.
    pub(crate) fn shard_of(&self, label: &str) -> Option<usize> {
        match self.registry.lookup(label) {
            Lookup::Live(route) => route.endpoint.shard(),
            _ => None,
        }
    }

    /// Tells the edge which host names have a certificate, so that a custom domain is
    /// redirected to HTTPS only once it has one (tunnel names always are, when redirecting).
    pub fn with_certificate_check(mut self, check: CertificateCheck) -> Self {
        self.certified = Some(check);
        self
    }

    /// Whether `host` has a certificate (never, without a check).
    pub(crate) fn has_certificate(&self, host: &str) -> bool {
        self.certified.as_ref().is_some_and(|check| check(host))
    }

    /// Lets the HTTP listener answer `/.well-known/acme-challenge/TOKEN`.
    pub fn with_http01(mut self, responder: Http01Responder) -> Self {
        self.acme_http01 = Some(responder);
        self
    }

    /// Once the listeners' shutdown token has fired: waits until every visitor connection has
    /// finished its request in flight and closed, at most `deadline`, then closes the rest.
    /// Returns how many were still open at the deadline.
    pub async fn drain(&self, deadline: Duration) -> usize {
        let visitors = &self.visitors;
        visitors.tracker.close();
        let _ = tokio::time::timeout(deadline, visitors.tracker.wait()).await;
        let left = visitors.tracker.len();
        visitors.cut.cancel();
        left
    }

    /// Visitor connections open now.
    pub fn visitor_connections(&self) -> usize {
        self.visitors.tracker.len()
    }

    /// The accept loop of a visitor listener: connections from `proxy_sources` are handed out
    /// once their PROXY header is read, as the visitor it names.
    pub(crate) fn acceptor(
        &self,
        listener: TcpListener,
        kind: Listener,
        what: &'static str,
    ) -> Acceptor {
        Acceptor::new(listener, what).with_proxy(
            self.settings.proxy_sources.clone(),
            self.metrics.proxy_headers_refused(Some(kind)),
        )
    }

    pub(crate) fn trusts(&self, peer: &SocketAddr) -> bool {
        self.trusts_ip(&peer.ip())
    }

    pub(crate) fn trusts_ip(&self, ip: &std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.settings
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&ip))
    }
}

/// Serves plain HTTP visitors on `listener` until `shutdown` is cancelled; connections then
/// finish the request in flight and close (see [`Edge::drain`]).
pub async fn run(
    listener: TcpListener,
    shutdown: CancellationToken,
    edge: Arc<Edge>,
) -> std::io::Result<()> {
    // Upstream pools are shared by HTTP and HTTPS visitors; one sweeper serves both.
    tokio::spawn(pool::expire(edge.clone(), shutdown.clone()));
    let mut acceptor = edge.acceptor(listener, Listener::Http, "http");
    while let Some((socket, peer)) = acceptor.next(&shutdown).await {
        edge.metrics.visitor_connection(Listener::Http);
        let admitted = match edge.admit(peer) {
            Ok(admitted) => admitted,
            Err(why) => {
                admit::refuse(&edge, &socket, peer, why, true);
                continue;
            }
        };
        let edge = edge.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let shard = if edge.shards.len() > 1 {
                match first_host(&socket, admitted.head_deadline).await {
                    Some(host) => edge.shard_for(&host),
                    None => {
                        // Not a byte of a request head in all that time.
                        edge.metrics.limit_hit(Limit::HeaderTimeout);
                        let (_, writer) = io::visitor_io(socket);
                        writer.write_final(pages::REQUEST_TIMEOUT).await;
                        return;
                    }
                }
            } else {
                None
            };
            let shards = edge.shards.clone();
            shards.hand_off(shard, socket, move |socket| {
                let conn = serve_visitor(edge.clone(), socket, peer, shutdown, admitted);
                edge.visitors
                    .track(conn)
                    .instrument(visitor_span!("visitor", peer))
            });
        });
    }
    Ok(())
}

/// Waits for the start of the visitor's first request and peeks (does not consume) its Host:
/// `None` if nothing arrived within the request head deadline, an empty host if what arrived
/// does not name one (yet). The peek sees what one read would; a head split across packets
/// may hide its Host, which only costs the thread choice.
async fn first_host(socket: &tokio::net::TcpStream, deadline: Duration) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    let peeked = tokio::time::timeout(deadline, socket.peek(&mut buf));
    match peeked.await {
        Err(_) => None,
        Ok(Ok(n)) => Some(
            buf.get(..n)
                .and_then(host::peeked_host)
                .unwrap_or_default()
                .to_vec(),
        ),
        // Reset already: hyper will find out and say nothing; no page to send.
        Ok(Err(_)) => Some(Vec::new()),
    }
}

async fn serve_visitor(
    edge: Arc<Edge>,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    draining: CancellationToken,
    admitted: admit::Admitted,
) {
    let admit::Admitted {
        mut ticket,
        head_deadline,
    } = admitted;
    let (io, writer) = io::visitor_io(socket);
    // The IP's place stays with `ticket` until the connection ends; the pending one goes with
    // the first request head.
    let conn_state = Arc::new(
        proxy::ConnState::new(edge.clone(), peer, crate::headers::Scheme::Http, None)
            .pending(ticket.take_pending()),
    );
    let service = {
        let conn_state = conn_state.clone();
        hyper::service::service_fn(move |req| proxy::handle(conn_state.clone(), req))
    };
    let s = &edge.settings;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_deadline)
        .max_header_size(s.max_header_bytes)
        .max_buf_size(READ_BUF_MAX)
        .max_headers(s.max_headers)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let result = drain::graceful(conn, &draining, |c| c.graceful_shutdown()).await;
    if let Err(e) = result {
        count_head_limits(&edge, &e, conn_state.requests());
        if e.is_timeout() && conn_state.requests() == 0 {
            // The visitor never finished its first request head: a slowloris or a stalled
            // client. Say so instead of vanishing.
            writer.write_final(pages::REQUEST_TIMEOUT).await;
        } else {
            debug!(error = %e, "visitor connection ended with error");
        }
    }
    drop(ticket);
}

/// Counts the limits hyper enforces itself, which end a connection without asking our
/// service: a request head too large or with too many headers (hyper answers 431), and a
/// first head that did not arrive in time (we answer 408).
pub(crate) fn count_head_limits(edge: &Edge, e: &hyper::Error, requests: u64) {
    if e.is_parse_too_large() {
        edge.metrics.limit_hit(Limit::RequestHead);
    } else if e.is_timeout() && requests == 0 {
        edge.metrics.limit_hit(Limit::HeaderTimeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A head whose Host has not arrived yet peeks as no host (the connection goes to the
    /// default thread) and loses nothing: hyper then reads the whole head from the socket.
    #[tokio::test]
    async fn a_head_in_pieces_peeks_as_no_host_and_stays_whole() -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
        let (mut server, _) = listener.accept().await?;
        let wait = Duration::from_secs(5);
        client.write_all(b"GET / HTTP/1.1\r\nHo").await?;
        assert_eq!(first_host(&server, wait).await, Some(Vec::new()));
        client.write_all(b"st: app.localhost\r\n\r\n").await?;
        let whole = b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n";
        let mut got = vec![0u8; whole.len()];
        tokio::time::timeout(wait, server.read_exact(&mut got)).await??;
        assert_eq!(got, whole);

        // A whole head names its host; silence past the deadline is `None`.
        let mut client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: Chat.Localhost:8080\r\n\r\n")
            .await?;
        let host = first_host(&server, wait).await;
        assert_eq!(host.as_deref(), Some(&b"Chat.Localhost:8080"[..]));
        let silent = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        assert_eq!(first_host(&server, Duration::from_millis(100)).await, None);
        drop(silent);
        Ok(())
    }
}

//! HTTPS for visitors. The ClientHello is read first so the SNI can route: a name bound for
//! TLS passthrough gets the raw bytes (ClientHello replayed) and holds its own certificate;
//! everything else is terminated here with the configured rustls config (whose resolver picks
//! the certificate by SNI) and served as HTTP/1.1 or HTTP/2, as the browser prefers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};
use warren_registry::{Lookup, PacedIo, Route, RouteKind};

use crate::Edge;
use crate::host::{Target, classify_host};
use crate::proxy::{self, ConnState};
use crate::rewind::Rewind;

/// A ClientHello larger than this is not one we will route.
const MAX_HELLO: usize = 64 * 1024;

/// Serves HTTPS visitors on `listener` until `shutdown` is cancelled; connections then finish
/// the request in flight and close (see [`Edge::drain`](crate::Edge::drain)).
pub async fn run_tls(
    listener: TcpListener,
    shutdown: CancellationToken,
    edge: Arc<Edge>,
    config: Arc<ServerConfig>,
) -> std::io::Result<()> {
    let mut acceptor = edge.acceptor(listener, warren_metrics::Listener::Https, "https");
    while let Some((socket, peer)) = acceptor.next(&shutdown).await {
        edge.metrics
            .visitor_connection(warren_metrics::Listener::Https);
        let admitted = match edge.admit(peer) {
            Ok(admitted) => admitted,
            Err(why) => {
                // An answer would cost a TLS handshake: close at once.
                crate::admit::refuse(&edge, &socket, peer, why, false);
                continue;
            }
        };
        let edge = edge.clone();
        let config = config.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let hello = tokio::select! {
                hello = hello(&edge, socket, admitted.head_deadline) => hello,
                _ = shutdown.cancelled() => return,
            };
            let Some((socket, label, raw)) = hello else {
                return;
            };
            let shard = label.as_deref().and_then(|l| edge.shard_of(l));
            let shards = edge.shards.clone();
            shards.hand_off(shard, socket, move |socket| {
                let conn = serve(
                    edge.clone(),
                    config,
                    socket,
                    peer,
                    label,
                    raw,
                    shutdown,
                    admitted,
                );
                edge.visitors
                    .track(conn)
                    .instrument(visitor_span!("tls visitor", peer))
            });
        });
    }
    Ok(())
}

/// Reads the ClientHello (within the request head deadline): the socket, the tunnel label its
/// SNI names (if any) and the bytes read.
async fn hello(
    edge: &Edge,
    mut socket: TcpStream,
    deadline: Duration,
) -> Option<(TcpStream, Option<String>, Vec<u8>)> {
    let hello = tokio::time::timeout(deadline, read_client_hello(&mut socket)).await;
    let (sni, raw) = match hello {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            debug!(error = %e, "no usable ClientHello");
            return None;
        }
        Err(_) => {
            debug!("ClientHello timed out");
            return None;
        }
    };
    let label =
        sni.as_deref().and_then(
            |s| match classify_host(s.as_bytes(), &edge.settings.domain) {
                Ok((Target::Tunnel(label), _)) => Some(label),
                Ok((Target::Elsewhere(host), _)) => edge.registry.alias(&host),
                Err(_) => None,
            },
        );
    Some((socket, label, raw))
}

/// The rest of a TLS visitor's connection, on its tunnel's thread: passthrough, or the
/// handshake and HTTP. `admitted` holds the visitor's places in the admission limits: the
/// pending one is given back with the first request head (terminated) or now (passthrough,
/// whose ClientHello is all we will see of it), the IP's one when the connection ends.
#[allow(clippy::too_many_arguments)]
async fn serve(
    edge: Arc<Edge>,
    config: Arc<ServerConfig>,
    socket: TcpStream,
    peer: SocketAddr,
    label: Option<String>,
    raw: Vec<u8>,
    draining: CancellationToken,
    admitted: crate::admit::Admitted,
) {
    let crate::admit::Admitted {
        mut ticket,
        head_deadline,
    } = admitted;
    if let Some(label) = &label
        && let Lookup::Live(route) = edge.registry.lookup(label)
        && route.kind == RouteKind::TlsPassthrough
    {
        // No header to read: the peer is the visitor. Once: the connection has one tunnel.
        let span = tracing::Span::current();
        span.record("tenant", route.owner);
        span.record("tunnel", route.name.as_str());
        span.record("visitor", tracing::field::display(peer.ip()));
        if let Some(policy) = edge.registry.policy_for(&route)
            && !crate::access::admits_stream(&route, &policy, peer)
        {
            return;
        }
        ticket.identified();
        passthrough(route, socket, raw, peer, &edge.metrics).await;
        return;
    }
    // The ClientHello is parsed again here (cheap) so that rustls's `Accepted` path is used:
    // it writes the alert when the handshake cannot go on (no certificate for the name), which
    // the plain acceptor's error path left unsent: clients saw a bare close instead of a TLS
    // alert.
    let start = match tokio_rustls::LazyConfigAcceptor::new(
        rustls::server::Acceptor::default(),
        Rewind::new(raw, socket),
    )
    .await
    {
        Ok(start) => start,
        Err(e) => {
            debug!(error = %e, "ClientHello not accepted");
            return;
        }
    };
    // The handshake gets the head's deadline too: a client that stalls in it would otherwise
    // hold its connection (and its pending place) for good.
    let handshake = tokio::time::timeout(head_deadline, start.into_stream(config));
    let tls = match handshake.await {
        Ok(Ok(tls)) => tls,
        Err(_) => {
            edge.metrics.limit_hit(warren_metrics::Limit::HeaderTimeout);
            debug!("TLS handshake timed out");
            return;
        }
        Ok(Err(e)) => {
            // No certificate for this name, a protocol error, or an ACME TLS-ALPN-01
            // validation that is done: rustls has sent its alert.
            debug!(error = %e, "TLS handshake ended");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"acme-tls/1") {
        // RFC 8737: the handshake itself was the answer.
        return;
    }
    // A connection opened for one tunnel's name may carry only that tunnel's requests; one
    // opened for another name (the apex, an IP, no SNI) is not tied to a tunnel.
    let state = Arc::new(
        ConnState::new(edge.clone(), peer, crate::headers::Scheme::Https, label)
            .pending(ticket.take_pending()),
    );
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |req| proxy::handle(state.clone(), req))
    };
    let s = &edge.settings;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_deadline)
        .max_buf_size(s.max_header_bytes.max(8192))
        .max_headers(s.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(s.max_header_bytes as u32)
        .max_concurrent_streams(128)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    if let Err(e) = crate::drain::graceful(conn, &draining, |c| c.graceful_shutdown()).await {
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            crate::count_head_limits(&edge, e, state.requests());
        }
        debug!(error = %e, "https visitor connection ended with error");
    }
    drop(ticket);
}

/// Reads until a whole ClientHello is in; returns its SNI and every byte read.
async fn read_client_hello(socket: &mut TcpStream) -> std::io::Result<(Option<String>, Vec<u8>)> {
    let mut hello = Hello::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(sni) = hello.feed(&buf[..n])? {
            return Ok((sni, hello.raw));
        }
    }
}

/// A ClientHello arriving in pieces: every byte kept (passthrough relays them as they came),
/// parsed by rustls. Apart from the socket so that it can be fuzzed (fuzz/, `client_hello`).
#[derive(Default)]
pub struct Hello {
    acceptor: rustls::server::Acceptor,
    raw: Vec<u8>,
}

impl Hello {
    /// Takes the next bytes: `Some(sni)` once the ClientHello is whole (`Some(None)`: it named
    /// no server), `None` while more is needed, an error for anything that is not one or for
    /// one past [`MAX_HELLO`] bytes.
    pub fn feed(&mut self, mut bytes: &[u8]) -> std::io::Result<Option<Option<String>>> {
        self.raw.extend_from_slice(bytes);
        if self.raw.len() > MAX_HELLO {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "ClientHello too large",
            ));
        }
        while !bytes.is_empty() {
            self.acceptor.read_tls(&mut bytes)?;
        }
        match self.acceptor.accept() {
            Ok(Some(accepted)) => Ok(Some(
                accepted
                    .client_hello()
                    .server_name()
                    .map(|s| s.to_ascii_lowercase()),
            )),
            Ok(None) => Ok(None),
            Err((e, _alert)) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            )),
        }
    }
}

/// Relays the visitor's encrypted bytes to the owner's service, ClientHello first.
async fn passthrough(
    route: Arc<Route>,
    mut socket: TcpStream,
    hello: Vec<u8>,
    peer: SocketAddr,
    metrics: &warren_metrics::Metrics,
) {
    let Some(_permit) = route.take_slot() else {
        debug!("passthrough tunnel at its connection limit");
        metrics.limit_hit(warren_metrics::Limit::TunnelConnections);
        return;
    };
    let started = std::time::Instant::now();
    let mut upstream = match route.endpoint.open(peer).await {
        Ok(s) => s,
        Err(e) => {
            route
                .endpoint
                .notify(format!("TLS connection from {peer} failed: {e}"));
            return;
        }
    };
    route
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The ClientHello read for routing counts as bytes in: it is replayed to the origin.
    let mut visitor = PacedIo::visitor(Rewind::new(hello, &mut socket), &route);
    let _ = tokio::io::copy_bidirectional(&mut visitor, &mut upstream).await;
    let (up, down) = (visitor.read, visitor.written);
    route.endpoint.notify(format!(
        "TLS {peer} {}s {up}B up {down}B down",
        started.elapsed().as_secs()
    ));
}

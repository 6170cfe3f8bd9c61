//! The accept loop of the public listeners (SSH, HTTP, HTTPS, TCP tunnel ports), and the
//! client's address each connection is handled as.
//!
//! Behind a TCP load balancer (HAProxy, a cloud NLB) every connection comes from the balancer,
//! and per-IP limits, IP rules, `X-Forwarded-For` and logs would all see its address. Those
//! balancers can put a PROXY protocol header (v1 text or v2 binary) in front of each
//! connection, naming the client. Sources the operator lists (`proxy_protocol_from`) must send
//! one; everyone else is taken at the socket's word, and a header from them is just bytes of
//! their request, so a visitor cannot claim another address.
//!
//! The header is read on a task of its own, never in the accept loop, so a balancer whose
//! connection stalls holds up nobody else; [`Acceptor::next`] hands out connections whose
//! header has been read, with the client's address, as it does plain ones. Exactly the
//! header's bytes are consumed (peeked first, then read), so what follows reaches the
//! listener's protocol untouched and the socket stays a plain `TcpStream` that the tunnel
//! threads can take over.
#![warn(missing_docs)]

mod header;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use warren_admit::Throttle;

pub use header::{HeaderError, parse as parse_header, read_header};

/// How long a listed source has to send its header. A balancer sends it as it connects, in
/// the first segment; this only bounds a source that connects and says nothing.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// Headers being read at once per listener; connections past it are closed. A balancer opens
/// connections as fast as its clients do, and each header arrives within a round trip, so
/// this is only reached when a listed source stalls.
const MAX_READING: usize = 1024;
/// A refused header is logged at most this often (the count goes to the metric).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The sources that put a PROXY protocol header in front of every connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySources {
    nets: Vec<IpNet>,
}

impl ProxySources {
    /// Sources in `nets` must send a header; no others may.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Whether a connection from `ip` starts with a header (IPv4-mapped IPv6 addresses count
    /// as the IPv4 address they carry).
    pub fn sends_header(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// A listener's accept loop: connections with their client's address.
pub struct Acceptor {
    listener: TcpListener,
    what: &'static str,
    sources: ProxySources,
    refused: metrics::Counter,
    read_tx: mpsc::Sender<(TcpStream, SocketAddr)>,
    read_rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    reading: Arc<Semaphore>,
    warned: Arc<Throttle>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("listener", &self.listener)
            .field("what", &self.what)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Accepts on `listener` (named `what` in logs), every client taken at the socket's word.
    pub fn new(listener: TcpListener, what: &'static str) -> Self {
        let (read_tx, read_rx) = mpsc::channel(64);
        Self {
            listener,
            what,
            sources: ProxySources::default(),
            refused: metrics::Counter::noop(),
            read_tx,
            read_rx,
            reading: Arc::new(Semaphore::new(MAX_READING)),
            warned: Arc::new(Throttle::new(WARN_EVERY)),
        }
    }

    /// Connections from `sources` start with a PROXY protocol header naming the client; those
    /// whose header is missing, malformed or late are closed and counted in `refused`.
    pub fn with_proxy(mut self, sources: ProxySources, refused: metrics::Counter) -> Self {
        self.sources = sources;
        self.refused = refused;
        self
    }

    /// The next connection (TCP_NODELAY set) and its client's address, or `None` once
    /// `shutdown` is cancelled. Accept errors (out of file descriptors, mostly) back off
    /// briefly instead of spinning. Cancel-safe: a connection is either returned or still
    /// queued.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let (socket, peer) = tokio::select! {
                _ = shutdown.cancelled() => return None,
                // Never closed: this acceptor holds a sender.
                Some(read) = self.read_rx.recv() => return Some(read),
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!(error = %e, "{} accept failed", self.what);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = socket.set_nodelay(true);
            if !self.sources.sends_header(peer.ip()) {
                return Some((socket, peer));
            }
            self.read_in_background(socket, peer);
        }
    }

    /// Reads the header of a listed source's connection on a task of its own; the connection
    /// comes out of [`Acceptor::next`] once it is read.
    fn read_in_background(&self, mut socket: TcpStream, balancer: SocketAddr) {
        let Ok(permit) = self.reading.clone().try_acquire_owned() else {
            self.refuse(balancer, &HeaderError::Busy);
            return;
        };
        let tx = self.read_tx.clone();
        let refused = self.refused.clone();
        let warned = self.warned.clone();
        let what = self.what;
        tokio::spawn(async move {
            let _permit = permit;
            match read_header(&mut socket, HEADER_DEADLINE).await {
                // No client named: the balancer's own connection (a health check).
                Ok(client) => {
                    let _ = tx.send((socket, client.unwrap_or(balancer))).await;
                }
                Err(e) => refused_header(&refused, &warned, what, balancer, &e),
            }
        });
    }

    fn refuse(&self, balancer: SocketAddr, e: &HeaderError) {
        refused_header(&self.refused, &self.warned, self.what, balancer, e);
    }
}

/// Counts and (now and then) logs a connection closed for its header.
fn refused_header(
    refused: &metrics::Counter,
    warned: &Throttle,
    what: &str,
    balancer: SocketAddr,
    e: &HeaderError,
) {
    if matches!(e, HeaderError::Empty) {
        debug!(%balancer, "{what} connection from a PROXY source closed at once (a health check)");
        return;
    }
    refused.increment(1);
    match warned.hit() {
        Some(quiet) => warn!(
            %balancer,
            error = %e,
            refused_since_last_line = quiet,
            "{what} connection closed: sources in proxy_protocol_from must start each connection \
             with a PROXY protocol header (HAProxy: send-proxy or send-proxy-v2)"
        ),
        None => debug!(%balancer, error = %e, "{what} connection closed: no PROXY header"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn acceptor(listed: &str) -> (Acceptor, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sources = ProxySources::new(vec![listed.parse().expect("net")]);
        let acceptor =
            Acceptor::new(listener, "test").with_proxy(sources, metrics::Counter::noop());
        (acceptor, addr)
    }

    /// A listed source's connection comes out as the client its header names, with the
    /// bytes after the header intact; a health check's (connect, close) never comes out.
    #[tokio::test]
    async fn a_listed_source_is_handed_out_as_the_client_it_names() {
        let (mut acceptor, addr) = acceptor("127.0.0.1/32").await;
        let shutdown = CancellationToken::new();
        drop(TcpStream::connect(addr).await.expect("health check"));
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 4242 80\r\nSSH-2.0-x\r\n")
            .await
            .expect("write");
        let (mut socket, peer) =
            tokio::time::timeout(Duration::from_secs(10), acceptor.next(&shutdown))
                .await
                .expect("in time")
                .expect("a connection");
        assert_eq!(
            peer,
            "203.0.113.9:4242".parse::<SocketAddr>().expect("addr")
        );
        let mut rest = [0u8; 11];
        socket.read_exact(&mut rest).await.expect("read");
        assert_eq!(&rest, b"SSH-2.0-x\r\n");
    }

    /// Anyone else is taken at the socket's word, a header of theirs left as their bytes.
    #[tokio::test]
    async fn an_unlisted_source_cannot_name_another_client() {
        let (mut acceptor, addr) = acceptor("192.0.2.1/32").await;
        let shutdown = CancellationToken::new();
        let mut c = TcpStream::connect(addr).await.expect("connect");
        let header = b"PROXY TCP4 203.0.113.9 127.0.0.1 4242 80\r\n";
        c.write_all(header).await.expect("write");
        let (mut socket, peer) = acceptor.next(&shutdown).await.expect("a connection");
        assert_eq!(peer, c.local_addr().expect("addr"));
        let mut got = vec![0u8; header.len()];
        socket.read_exact(&mut got).await.expect("read");
        assert_eq!(got, header);
        shutdown.cancel();
        assert!(acceptor.next(&shutdown).await.is_none());
    }
}

//! The listening side: streams from other nodes, each to a tunnel of this node.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use warren_registry::{Followed, Lookup, OpenError, PacedIo, Registry, Route};
use warren_shards::Shards;

use crate::readahead::ReadAhead;
use crate::wire::{self, NOT_HERE, OPENED, Opening, REFUSED, Record, UNREACHABLE};
use crate::{NodeTls, PeerError};

/// A peer must finish its handshake and header in this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy buffers per direction: the size of an SSH channel's packets.
const BUFFER: usize = 32 << 10;

/// How long the listener waits on another node that has gone quiet. Peers hold cluster
/// certificates, but a node can vanish without a word (powered off, cut off by a firewall): no
/// FIN, no reset, and TCP alone would keep its streams for hours.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// A records stream whose node last said it holds visitor connections open, and then says
    /// nothing for this long, is ended and those connections taken back: a node that is up
    /// says them again every report (each second), so this many missed reports mean it is
    /// gone, and the tunnel's cap must not count its visitors for ever.
    pub reports: Duration,
    /// Any records stream quiet this long is ended (its sender ends it after a minute without
    /// a record anyway).
    pub records: Duration,
    /// A counters question must be asked (its names sent) within this.
    pub question: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            reports: Duration::from_secs(5),
            records: Duration::from_secs(90),
            question: HANDSHAKE_TIMEOUT,
        }
    }
}

/// Serves other nodes' streams on `listener` until `shutdown`. A peer without a certificate
/// from the cluster CA is cut at the handshake; a name no session of this node serves is
/// answered "not here" (a peer's view was stale), never forwarded again. Once the header names
/// the tunnel, the stream moves to the tunnel thread of the owner's session (`shards`), as a
/// visitor's connection does on the node it reached. A node gone quiet is let go after
/// `patience`.
pub async fn serve(
    listener: TcpListener,
    tls: &NodeTls,
    registry: Arc<Registry>,
    shards: Arc<Shards>,
    patience: Patience,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls.server.clone());
    loop {
        let (sock, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    warn!(error = %e, "cluster listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let acceptor = acceptor.clone();
        let registry = registry.clone();
        let shards = shards.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(sock, acceptor, &registry, &shards, patience).await {
                debug!(%peer, error = %e, "cluster stream ended");
            }
        });
    }
}

/// The socket under a hop's TLS, in a slot so that it can leave one runtime's reactor and join
/// another's between two reads without undoing the TLS session above it.
struct Movable(Option<TcpStream>);

impl Movable {
    fn socket(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        match &mut self.0 {
            Some(s) => Ok(Pin::new(s)),
            None => Err(io::Error::other(
                "the socket is moving to its tunnel thread",
            )),
        }
    }
}

impl AsyncRead for Movable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().socket() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Movable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().socket() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    // rustls hands over every record it has ready at once: one `sendmsg` for them all.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().socket() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().socket() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().socket() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Read ahead beneath the TLS session, so the buffer moves with the session and the socket
/// alone changes threads.
type Hop = TlsStream<ReadAhead<Movable>>;

async fn handle(
    sock: TcpStream,
    acceptor: TlsAcceptor,
    registry: &Registry,
    shards: &Shards,
    patience: Patience,
) -> Result<(), PeerError> {
    crate::dial::tune(&sock);
    let timed_out = || PeerError::Header("handshake timed out".into());
    let (mut tls, opening) = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut tls = acceptor.accept(ReadAhead::new(Movable(Some(sock)))).await?;
        let opening = wire::read_header(&mut tls).await?;
        Ok::<_, PeerError>((tls, opening))
    })
    .await
    .map_err(|_| timed_out())??;
    let (visitor, name) = match opening {
        Opening::Visitor(visitor, name) => (visitor, name),
        Opening::Records { typed } => {
            return deliver_records(tls, registry, typed, patience).await;
        }
        Opening::Stats => return send_stats(tls, registry, patience.question).await,
        Opening::Log {
            name,
            owner,
            follow,
        } => return send_log(tls, registry, &name, owner, follow).await,
    };
    let route = match registry.lookup_local(&name) {
        Lookup::Live(route) => route,
        _ => {
            wire::write_status(
                &mut tls,
                NOT_HERE,
                &format!("{name:?} is not held on this node"),
            )
            .await?;
            return Ok(());
        }
    };
    // Every channel message of the owner's session is handled on its tunnel thread: copying
    // there, not on this runtime, spares a cross-thread wake-up per read each way.
    let shard = route.endpoint.shard().filter(|i| *i < shards.len());
    if shard.is_none() || shard == Shards::current() {
        return relay(tls, visitor, &route).await;
    }
    let Some(socket) = tls.get_mut().0.get_mut().0.take() else {
        return Ok(());
    };
    shards.hand_off(shard, socket, move |socket| async move {
        tls.get_mut().0.get_mut().0 = Some(socket);
        if let Err(e) = relay(tls, visitor, &route).await {
            debug!(error = %e, "cluster stream ended");
        }
    });
    Ok(())
}

/// Takes what another node sends about its visitors of this node's tunnels: each line is
/// shown to the owner of the tunnel it names, each request log entry is kept in the tunnel's
/// log, if a session of this node serves it for the owner the record names (records for a
/// name that moved on, or changed hands, are dropped, as lines an owner's terminal cannot take
/// are). Ends when the sending node goes quiet for longer than `patience` allows.
async fn deliver_records(
    tls: Hop,
    registry: &Registry,
    typed: bool,
    patience: Patience,
) -> Result<(), PeerError> {
    // The visitor connections the sending node last said it holds open, by name, and the
    // route they were added to: taken back when the stream ends (the node is gone, or will
    // report them again on its next stream).
    let mut open: HashMap<String, (Weak<Route>, u64)> = HashMap::new();
    let delivered = deliver(tls, registry, typed, patience, &mut open).await;
    for (route, n) in open.into_values() {
        if let Some(route) = route.upgrade() {
            route.add_elsewhere(0, 0, 0, -i64::try_from(n).unwrap_or(0));
        }
    }
    delivered
}

async fn deliver(
    tls: Hop,
    registry: &Registry,
    typed: bool,
    patience: Patience,
    open: &mut HashMap<String, (Weak<Route>, u64)>,
) -> Result<(), PeerError> {
    let mut r = tokio::io::BufReader::new(tls);
    let mut buf = Vec::new();
    // How many connections the sending node last said it holds, over all its tunnels here
    // (the sum of `open`'s, which starts empty).
    let mut held: u64 = 0;
    loop {
        let holding = held > 0;
        let quiet = if holding {
            patience.reports
        } else {
            patience.records
        };
        let Ok(next) = tokio::time::timeout(quiet, wire::read_record(&mut r, &mut buf)).await
        else {
            return Err(PeerError::Quiet(if holding {
                "a node holding visitor connections stopped reporting them"
            } else {
                "a records stream went quiet"
            }));
        };
        let Some(record) = next? else {
            break;
        };
        let Some((owner, record)) = wire::parse_record(record, typed) else {
            continue;
        };
        let name = match &record {
            Record::Line(name, _) | Record::Entry(name, _) | Record::Counts(name, _) => name,
        };
        let Lookup::Live(route) = registry.lookup_local(name) else {
            continue;
        };
        // The name changed hands since the sending node's visitor was served: the record is
        // about the previous owner's tunnel, and none of the new owner's business.
        if owner.is_some_and(|o| o != route.owner) {
            continue;
        }
        match record {
            Record::Line(_, line) => route.endpoint.notify(line),
            // A log is only carried on to the same owner's later routes: whichever route
            // serves the name here, the entry was made for a visitor of that tunnel.
            Record::Entry(_, entry) => route.record(entry),
            Record::Counts(name, c) => {
                // The connections reported before count against the route they were added
                // to; a route that replaced it starts from none.
                let before = match open.get(&name) {
                    Some((r, n)) if r.as_ptr() == Arc::as_ptr(&route) => *n,
                    _ => 0,
                };
                let change =
                    i64::try_from(c.connections).unwrap_or(0) - i64::try_from(before).unwrap_or(0);
                route.add_elsewhere(c.requests, c.bytes_in, c.bytes_out, change);
                let replaced = open.insert(name, (Arc::downgrade(&route), c.connections));
                held = held
                    .saturating_sub(replaced.map_or(0, |(_, n)| n))
                    .saturating_add(c.connections);
            }
        }
    }
    Ok(())
}

/// Answers another node's question for counters: the names it asks about, one a line and an
/// empty line, each answered with its counters here (this node's visitors and those other nodes
/// reported) if a session of this node serves it. The names must all arrive `within`.
async fn send_stats(tls: Hop, registry: &Registry, within: Duration) -> Result<(), PeerError> {
    use tokio::io::AsyncWriteExt;
    let mut r = tokio::io::BufReader::new(tls);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let asked = async {
        loop {
            match wire::read_record(&mut r, &mut buf).await? {
                Some([]) => return Ok(()),
                Some(name) => {
                    let name = String::from_utf8_lossy(name);
                    if let Lookup::Live(route) = registry.lookup_local(&name) {
                        wire::stats_line(&mut out, &name, &route.cluster_stats());
                    }
                }
                None => return Err(PeerError::Header("the names ended early".into())),
            }
        }
    };
    tokio::time::timeout(within, asked)
        .await
        .map_err(|_| PeerError::Quiet("a counters question was not asked in time"))??;
    let mut tls = r.into_inner();
    wire::write_status(&mut tls, OPENED, "").await?;
    tls.write_all(&out).await?;
    tls.flush().await?;
    Ok(tls.shutdown().await?)
}

/// Sends the request log of `name` to a node whose reader may see `owner`'s: the recent
/// entries, then (when the reader follows) each entry as it is recorded, until the reader's
/// node closes the stream or the log goes with the name. A reader that falls behind is sent how
/// many it missed, as a follower on this node is.
async fn send_log(
    tls: Hop,
    registry: &Registry,
    name: &str,
    owner: i64,
    follow: bool,
) -> Result<(), PeerError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = tokio::io::split(tls);
    let Some(log) = registry.request_log(name).filter(|l| l.owner() == owner) else {
        wire::write_status(
            &mut w,
            NOT_HERE,
            &format!("no request log for {name:?} on this node"),
        )
        .await?;
        return Ok(());
    };
    wire::write_status(&mut w, OPENED, "").await?;
    let mut feed = log.feed(follow);
    drop(log);
    let mut out = Vec::with_capacity(64 << 10);
    for e in std::mem::take(&mut feed.recent) {
        wire::log_record(&mut out, Some(&e));
        if out.len() >= 32 << 10 {
            w.write_all(&out).await?;
            out.clear();
        }
    }
    wire::log_record(&mut out, None);
    w.write_all(&out).await?;
    w.flush().await?;
    if !follow {
        return Ok(w.shutdown().await?);
    }
    let mut byte = [0u8; 1];
    loop {
        let next = tokio::select! {
            next = feed.next() => next,
            // The reader sends nothing after its header: a read that returns is its end.
            _ = r.read(&mut byte) => return Ok(()),
        };
        out.clear();
        match next {
            Some(Followed::Entry(e)) => wire::log_record(&mut out, Some(&e)),
            Some(Followed::Lagged(n)) => wire::lagged_record(&mut out, n),
            None => return Ok(w.shutdown().await?),
        }
        w.write_all(&out).await?;
        w.flush().await?;
    }
}

/// Opens the owner's channel for `visitor`, answers the peer, and copies until either side ends.
async fn relay(mut tls: Hop, visitor: SocketAddr, route: &Route) -> Result<(), PeerError> {
    let mut stream = match route.endpoint.open(visitor).await {
        Ok(s) => s,
        Err(OpenError::Refused(why)) => {
            return Ok(wire::write_status(&mut tls, REFUSED, &why).await?);
        }
        Err(OpenError::Unreachable(why) | OpenError::Away(why)) => {
            return Ok(wire::write_status(&mut tls, UNREACHABLE, &why).await?);
        }
    };
    wire::write_status(&mut tls, OPENED, "").await?;
    // The visitor's node counts the bytes and requests (it sees them as HTTP); here they are
    // only carried, held to the tunnel's bandwidth with this node's own visitors.
    let mut tls = PacedIo::hop(tls, route);
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut tls, &mut stream, BUFFER, BUFFER).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{ClusterCa, Dialer};

    /// A listener holding no tunnel, serving under a new cluster CA until the guard drops,
    /// and a dialer of the same cluster to reach it at the address returned.
    async fn listening(patience: Patience) -> (Dialer, String, tokio_util::sync::DropGuard) {
        let ca = ClusterCa::generate().expect("ca");
        let tls = NodeTls::issue(&ca).expect("listener certificate");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let addr = listener.local_addr().expect("addr").to_string();
        let registry = Arc::new(Registry::new(Duration::from_secs(60), 10));
        let shards = Arc::new(Shards::start(1).expect("tunnel thread"));
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move { serve(listener, &tls, registry, shards, patience, token).await });
        let dialer =
            Dialer::new(&NodeTls::issue(&ca).expect("dialer certificate")).expect("dialer");
        (dialer, addr, stop.drop_guard())
    }

    /// The keepalive timers (`tr` 2 in `/proc/net/tcp`) of the established sockets with
    /// `port` at either end, as (local port, timer) pairs.
    #[cfg(target_os = "linux")]
    fn timers(port: u16) -> Vec<(u16, u8)> {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let port_of = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap_or(""), 16).ok();
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (local, remote) = (port_of(f.get(1)?)?, port_of(f.get(2)?)?);
                let timer = f.get(5)?.split(':').next()?.parse().ok()?;
                (*f.get(3)? == "01" && (local == port || remote == port)).then_some((local, timer))
            })
            .collect()
    }

    /// Both ends of a stream between nodes, the dialer's and the listener's, run TCP's
    /// keepalive timer once the stream is quiet: a node that vanished is noticed.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn both_ends_of_a_stream_between_nodes_keep_alive() {
        let (dialer, addr, _stop) = listening(Patience::default()).await;
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let _stream = dialer.link.connect(&addr).await.expect("connected");
        // Within the listener's handshake timeout (10 s), which would close the stream.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let found = timers(port);
            if found.len() == 2 && found.iter().all(|(_, timer)| *timer == 2) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sockets and their timers: {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A node that opens a counters question and never asks it is cut after the patience,
    /// answered nothing; the listener does not keep its task for ever.
    #[tokio::test]
    async fn a_question_never_asked_is_closed() {
        let (dialer, addr, _stop) = listening(Patience {
            question: Duration::from_millis(300),
            ..Patience::default()
        })
        .await;
        let mut s = dialer.link.connect(&addr).await.expect("connected");
        s.write_all(&wire::stats_header().expect("header"))
            .await
            .expect("header sent");
        s.flush().await.expect("flushed");
        let asked = tokio::time::Instant::now();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "still open after 10 s");
        let after = asked.elapsed();
        assert!(
            after >= Duration::from_millis(250),
            "closed after {after:?}"
        );
        assert!(answer.is_empty(), "answered {answer:?}");
    }
}

//! The dialing side: an [`Endpoint`] that reaches a tunnel held on another node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use warren_registry::{
    BoxStream, Endpoint, LogFeed, OpenError, Registry, RequestEntry, RouteStats,
};

use crate::readahead::ReadAhead;
use crate::tls::CLUSTER_NAME;
use crate::wire::{self, Counts, NOT_HERE, REFUSED};
use crate::{NodeTls, PeerError};

/// How long a node may take to connect, shake hands and answer for the owner's channel.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Records (lines for owners, request log entries) for one node waiting to be sent; past this
/// they are dropped, as an owner's terminal that does not keep up drops lines. Two records a
/// request: a burst of 2,000 requests faster than the stream takes them.
const LINES_QUEUED: usize = 4096;
/// Lines are sent in batches of up to this many bytes: one TLS record for a burst.
const LINES_BATCH: usize = 16 << 10;
/// After a node could not be reached, its lines are dropped for this long before trying again.
const LINES_RETRY: Duration = Duration::from_secs(1);
/// A node's lines stream (and the task that writes it) ends after this long without a line, so
/// a node that left the cluster, or whose tunnels went quiet, holds nothing here or there; the
/// next line opens it again.
const LINES_IDLE: Duration = Duration::from_secs(60);

/// Opens streams to other nodes; one per process, shared by every remote route.
pub struct Dialer {
    pub(crate) link: Link,
    /// Where the lines for owners on each node go (by cluster address): one stream per node.
    lines: Mutex<HashMap<String, mpsc::Sender<Vec<u8>>>>,
    /// See [`LINES_IDLE`].
    lines_idle: Duration,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer presenting this node's certificate.
    pub fn new(tls: &NodeTls) -> Result<Self, PeerError> {
        Ok(Self {
            link: Link {
                tls: TlsConnector::from(tls.client.clone()),
                server_name: ServerName::try_from(CLUSTER_NAME)
                    .map_err(|e| PeerError::Certificate(e.to_string()))?,
            },
            lines: Mutex::new(HashMap::new()),
            lines_idle: LINES_IDLE,
        })
    }

    /// The same dialer, ending each lines stream after `idle` without a line instead of
    /// [`LINES_IDLE`] (tests watch it happen).
    pub fn with_lines_idle(mut self, idle: Duration) -> Self {
        self.lines_idle = idle;
        self
    }

    /// How many nodes this one holds a lines stream (and its task) for.
    pub fn lines_streams(&self) -> usize {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.values().filter(|tx| !tx.is_closed()).count()
    }

    /// The queue of lines for owners on the node at `addr`, and the task that sends them
    /// (started with the first line, again once it ended after being idle).
    fn lines_to(&self, addr: &str) -> mpsc::Sender<Vec<u8>> {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = lines.get(addr).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        // The queues of nodes gone quiet go with them: the map holds live streams only.
        lines.retain(|_, tx| !tx.is_closed());
        let (tx, rx) = mpsc::channel(LINES_QUEUED);
        tokio::spawn(carry_lines(
            self.link.clone(),
            addr.to_owned(),
            rx,
            self.lines_idle,
        ));
        lines.insert(addr.to_owned(), tx.clone());
        tx
    }

    /// A stream to `name` on the node at `addr`, for `visitor`.
    async fn open(
        &self,
        addr: &str,
        name: &str,
        visitor: SocketAddr,
    ) -> Result<BoxStream, OpenError> {
        let away = |e: &dyn std::fmt::Display| OpenError::Away(format!("{addr}: {e}"));
        let mut tls = self.link.connect(addr).await.map_err(|e| away(&e))?;
        let header = wire::header(visitor, name).map_err(|e| away(&e))?;
        tokio::io::AsyncWriteExt::write_all(&mut tls, &header)
            .await
            .map_err(|e| away(&e))?;
        tokio::io::AsyncWriteExt::flush(&mut tls)
            .await
            .map_err(|e| away(&e))?;
        match wire::read_status(&mut tls).await.map_err(|e| away(&e))? {
            Ok(()) => Ok(Box::pin(tls)),
            Err((REFUSED, why)) => Err(OpenError::Refused(why)),
            // The view this node had is stale; the name's new place arrives within a second.
            Err((NOT_HERE, why)) => Err(OpenError::Away(format!("{addr}: {why}"))),
            Err((_, why)) => Err(OpenError::Unreachable(why)),
        }
    }
}

/// Every `every`, until `shutdown`, tells the nodes holding the tunnels this node forwards to
/// what this node's visitors of each did since the last time (only for those that changed), so
/// that the holder's counters are the tunnel's across the cluster; and, for the tunnels with
/// visitors here since the last tick or connections open (here, or on other nodes when last
/// heard), asks their holders how many the other nodes hold, which this node's cap on the
/// tunnel counts (`Route::take_slot`).
pub async fn report_counts(
    registry: Arc<Registry>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let mut busy = Vec::new();
        for route in registry.remote_routes() {
            let stats = route.stats();
            let changed = route.endpoint.report(stats);
            // Visitors here lately, or others' heard of before: the tunnel's cap needs the
            // others'. (A tunnel no visitor reached here costs no question: its first visitors
            // are let in up to this node's cap, and the next tick asks.)
            if changed || stats.connections > 0 || route.elsewhere_connections() > 0 {
                busy.push(route);
            }
        }
        // One question per holding node, each on a task of its own: a node slow to answer
        // holds up neither the others nor the next reports.
        for routes in warren_registry::by_holder(busy) {
            tokio::spawn(async move {
                let mut answer = warren_registry::holder_counts(&routes).await;
                for r in routes {
                    // The holder counts this node's connections as last reported: the others'
                    // are the rest. A holder that does not answer caps nothing beyond this node.
                    let (others, cap) = answer.remove(&r.name).map_or((0, 0), |s| {
                        let others = s.connections.saturating_sub(r.stats().connections);
                        (others as u64, s.max_connections)
                    });
                    r.heard_from_holder(others, cap);
                }
            });
        }
    }
}

/// A socket to another node goes unanswered this long before TCP asks whether the node is
/// still there, then asks every [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_PROBES`] times: a node that
/// vanished without a word (powered off, cut off) frees its streams here within about a
/// minute. Without it, a quiet stream (a WebSocket, a TCP tunnel's idle connection) would keep
/// its task, and on the holder its channel to the owner, for as long as this node runs.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// See [`KEEPALIVE_IDLE`].
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// See [`KEEPALIVE_IDLE`].
const KEEPALIVE_PROBES: u32 = 3;

/// Settings of every socket between nodes, dialed or accepted: no Nagle delay (records are
/// written whole), and TCP keepalive ([`KEEPALIVE_IDLE`]). A socket that refuses them still
/// works, so failures are only logged.
pub(crate) fn tune(sock: &TcpStream) {
    let _ = sock.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(sock).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keepalive on a cluster socket");
    }
}

/// What connecting to another node takes: this node's client certificate.
#[derive(Clone)]
pub(crate) struct Link {
    tls: TlsConnector,
    server_name: ServerName<'static>,
}

impl Link {
    pub(crate) async fn connect(
        &self,
        addr: &str,
    ) -> std::io::Result<TlsStream<ReadAhead<TcpStream>>> {
        let tcp = TcpStream::connect(addr).await?;
        tune(&tcp);
        self.tls
            .connect(self.server_name.clone(), ReadAhead::new(tcp))
            .await
    }
}

/// Sends the lines queued for owners on the node at `addr` over one stream, in batches;
/// connects again after a failure, dropping what arrives for [`LINES_RETRY`] meanwhile. Ends
/// after `idle` without a line: the queue is closed first, so a line queued meanwhile is still
/// sent, and the next one finds the queue closed and starts another task.
async fn carry_lines(link: Link, addr: String, mut rx: mpsc::Receiver<Vec<u8>>, idle: Duration) {
    let mut stream: Option<TlsStream<ReadAhead<TcpStream>>> = None;
    let mut quiet_until: Option<Instant> = None;
    let mut batch = Vec::with_capacity(LINES_BATCH);
    loop {
        let first = match tokio::time::timeout(idle, rx.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => break,
            Err(_) => {
                // What is queued still comes out of `recv`, then `None`.
                rx.close();
                continue;
            }
        };
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < LINES_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if stream.is_none() {
            if quiet_until.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
                let mut s = link.connect(&addr).await?;
                let header = wire::records_header().map_err(std::io::Error::other)?;
                s.write_all(&header).await?;
                Ok::<_, std::io::Error>(s)
            })
            .await;
            match opened {
                Ok(Ok(s)) => stream = Some(s),
                _ => {
                    tracing::debug!(%addr, "cannot reach a node for its owners' lines");
                    quiet_until = Some(Instant::now() + LINES_RETRY);
                    continue;
                }
            }
        }
        if let Some(s) = &mut stream
            && (s.write_all(&batch).await.is_err() || s.flush().await.is_err())
        {
            stream = None;
            quiet_until = Some(Instant::now() + LINES_RETRY);
        }
    }
}

/// A tunnel held by a session on another node, reached through its cluster listener.
pub struct PeerEndpoint {
    dialer: Arc<Dialer>,
    node: String,
    addr: String,
    name: String,
    /// Its owner, as this node's view has it: sent with each record, so that the holder drops
    /// those about a name that has since changed hands.
    owner: i64,
    /// The queue of lines to the owner's node, found at the first line and again once its
    /// stream ended idle: lock-free, since every request through the tunnel adds a line.
    lines: ArcSwapOption<mpsc::Sender<Vec<u8>>>,
    /// This node's counters of the tunnel at the last report ([`Endpoint::report`]).
    reported: Mutex<Counts>,
}

impl PeerEndpoint {
    /// `owner`'s `name` on `node`, whose cluster listener is at `addr`.
    pub fn new(dialer: Arc<Dialer>, node: &str, addr: &str, name: &str, owner: i64) -> Self {
        Self {
            owner,
            lines: ArcSwapOption::empty(),
            reported: Mutex::new(Counts::default()),
            dialer,
            node: node.to_owned(),
            addr: addr.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The node that holds the tunnel.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `asked` of the holding node, or `Away` when it takes longer than [`OPEN_TIMEOUT`].
    async fn within<T>(
        &self,
        asked: impl std::future::Future<Output = Result<T, OpenError>>,
    ) -> Result<T, OpenError> {
        tokio::time::timeout(OPEN_TIMEOUT, asked)
            .await
            .unwrap_or_else(|_| {
                Err(OpenError::Away(format!(
                    "node {} did not answer within {} s",
                    self.node,
                    OPEN_TIMEOUT.as_secs()
                )))
            })
    }

    /// Queues `record` for the holding node; whether the queue took it (a full one drops it,
    /// never the visitor's request).
    fn send(&self, record: Vec<u8>) -> bool {
        if let Some(tx) = self.lines.load().as_deref()
            && !tx.is_closed()
        {
            return tx.try_send(record).is_ok();
        }
        let tx = Arc::new(self.dialer.lines_to(&self.addr));
        self.lines.store(Some(tx.clone()));
        tx.try_send(record).is_ok()
    }
}

#[async_trait::async_trait]
impl Endpoint for PeerEndpoint {
    async fn open(&self, visitor: SocketAddr) -> Result<BoxStream, OpenError> {
        self.within(self.dialer.open(&self.addr, &self.name, visitor))
            .await
    }

    /// Sent to the owner's node, which shows it in their session: an owner behind a load
    /// balancer sees every visitor, wherever each landed.
    fn notify(&self, line: String) {
        let mut record = Vec::with_capacity(wire::OWNED_LEN + self.name.len() + line.len() + 4);
        wire::line_record(&mut record, self.owner, &self.name, &line);
        self.send(record);
    }

    /// Sent to the node that holds the tunnel, whose log has every node's visitors.
    fn record(&self, entry: RequestEntry) {
        let mut record =
            Vec::with_capacity(wire::OWNED_LEN + 256 + entry.path.len() + entry.headers.len());
        wire::entry_record(&mut record, self.owner, &self.name, &entry);
        self.send(record);
    }

    /// Sends what this node's visitors did since the last report, when anything changed or
    /// any visitor connection is open: the holder takes a node's open connections back when
    /// that node's stream ends (idle, cut, the node gone), so they are said again each second
    /// while there are any, and a new stream has them within a second. A report the queue
    /// cannot take is sent with the next one.
    fn report(&self, stats: RouteStats) -> bool {
        let now = Counts {
            requests: stats.requests,
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            connections: stats.connections as u64,
        };
        let mut last = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let changed = now != *last;
        if !changed && now.connections == 0 {
            return false;
        }
        let change = Counts {
            requests: now.requests.saturating_sub(last.requests),
            bytes_in: now.bytes_in.saturating_sub(last.bytes_in),
            bytes_out: now.bytes_out.saturating_sub(last.bytes_out),
            connections: now.connections,
        };
        let mut record = Vec::with_capacity(wire::OWNED_LEN + 64 + self.name.len());
        wire::counts_record(&mut record, self.owner, &self.name, &change);
        if self.send(record) {
            *last = now;
        }
        changed
    }

    async fn holder_stats(
        &self,
        names: Vec<String>,
    ) -> Result<HashMap<String, RouteStats>, OpenError> {
        self.within(self.dialer.stats(&self.addr, &names)).await
    }

    async fn request_log(&self, owner: i64, follow: bool) -> Result<LogFeed, OpenError> {
        self.within(self.dialer.read_log(&self.addr, &self.name, owner, follow))
            .await
    }

    fn describe(&self) -> String {
        format!("node {}", self.node)
    }

    fn node(&self) -> Option<&str> {
        Some(&self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends of a socket between nodes ask after a silent peer within about a minute.
    #[tokio::test]
    async fn sockets_between_nodes_keep_alive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let dialed = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        for sock in [&dialed, &accepted] {
            let before = socket2::SockRef::from(sock);
            assert!(!before.keepalive().expect("read"), "off until tuned");
            tune(sock);
            let s = socket2::SockRef::from(sock);
            assert!(s.keepalive().expect("SO_KEEPALIVE"));
            assert_eq!(
                s.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
                KEEPALIVE_IDLE
            );
            assert_eq!(
                s.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
                KEEPALIVE_INTERVAL
            );
            assert_eq!(
                s.tcp_keepalive_retries().expect("TCP_KEEPCNT"),
                KEEPALIVE_PROBES
            );
            assert!(sock.nodelay().expect("TCP_NODELAY"));
        }
    }
}

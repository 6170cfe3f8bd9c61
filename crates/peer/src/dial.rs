//! The dialing side: an [`Endpoint`] that reaches a tunnel held on another node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use warren_registry::{BoxStream, Endpoint, OpenError};

use crate::tls::CLUSTER_NAME;
use crate::wire::{self, NOT_HERE, REFUSED};
use crate::{NodeTls, PeerError};

/// How long a node may take to connect, shake hands and answer for the owner's channel.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens streams to other nodes; one per process, shared by every remote route.
pub struct Dialer {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    /// This node's tunnel threads (`warren-shards`), which remote tunnels are spread over.
    threads: usize,
    next: AtomicUsize,
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
            tls: TlsConnector::from(tls.client.clone()),
            server_name: ServerName::try_from(CLUSTER_NAME)
                .map_err(|e| PeerError::Certificate(e.to_string()))?,
            threads: 0,
            next: AtomicUsize::new(0),
        })
    }

    /// Spreads remote tunnels over this node's `n` tunnel threads, one thread each.
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// The tunnel thread for the next remote tunnel, in turn.
    fn next_thread(&self) -> Option<usize> {
        (self.threads > 0).then(|| self.next.fetch_add(1, Ordering::Relaxed) % self.threads)
    }

    /// A stream to `name` on the node at `addr`, for `visitor`.
    async fn open(
        &self,
        addr: &str,
        name: &str,
        visitor: SocketAddr,
    ) -> Result<BoxStream, OpenError> {
        let away = |e: &dyn std::fmt::Display| OpenError::Away(format!("{addr}: {e}"));
        let tcp = TcpStream::connect(addr).await.map_err(|e| away(&e))?;
        let _ = tcp.set_nodelay(true);
        let mut tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| away(&e))?;
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

/// A tunnel held by a session on another node, reached through its cluster listener.
pub struct PeerEndpoint {
    dialer: Arc<Dialer>,
    node: String,
    addr: String,
    name: String,
    shard: Option<usize>,
}

impl PeerEndpoint {
    /// `name` on `node`, whose cluster listener is at `addr`.
    pub fn new(dialer: Arc<Dialer>, node: &str, addr: &str, name: &str) -> Self {
        Self {
            shard: dialer.next_thread(),
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
}

#[async_trait::async_trait]
impl Endpoint for PeerEndpoint {
    async fn open(&self, visitor: SocketAddr) -> Result<BoxStream, OpenError> {
        match tokio::time::timeout(
            OPEN_TIMEOUT,
            self.dialer.open(&self.addr, &self.name, visitor),
        )
        .await
        {
            Ok(opened) => opened,
            Err(_) => Err(OpenError::Away(format!(
                "node {} did not answer within {} s",
                self.node,
                OPEN_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The owner's session is on the other node, which tells them what concerns them.
    fn notify(&self, _line: String) {}

    fn describe(&self) -> String {
        format!("node {}", self.node)
    }

    /// One thread per remote tunnel, as for a local one: its visitors and the pooled streams
    /// to the holding node then meet on one thread, and a request crosses none.
    fn shard(&self) -> Option<usize> {
        self.shard
    }

    fn node(&self) -> Option<&str> {
        Some(&self.node)
    }
}

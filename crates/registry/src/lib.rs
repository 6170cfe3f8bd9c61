//! The live routing table: the seam between the SSH server and the edge.
//!
//! The SSH side [`Registry::bind`]s a name to an [`Endpoint`] (something that can open a byte
//! stream to the owner's local service); the edge [`Registry::lookup`]s a name per visitor
//! connection and asks the endpoint for a stream. Neither knows the other. Lookups read an
//! `arc-swap` snapshot of one of 256 shards, so the hot path takes no lock; binds and unbinds
//! copy that shard under a mutex (see `map.rs`).
//!
//! The registry also remembers, for a grace period, names whose owner just went away: visitors
//! get "back soon" instead of "unknown", nobody else can take the name meanwhile, and the same
//! key asking again for a random name gets the same one back ([`Registry::sticky`]).
//!
//! Beside the routes it keeps each name's [`AccessPolicy`] (IP lists, basic-auth users, share
//! links), mirrored from the store, so the edge enforces access rules without a query.
//! Each HTTP name also has its recent requests ([`RequestLog`], fed by the edge, kept across
//! the owner's reconnects within the grace period), and each route its live counters
//! ([`Route::stats`]).
#![warn(missing_docs)]

/// The owner of the broker's own routes (the console host): a user id nobody has, since the
/// store's ids start at 1, so no tenant can take such a name over and a refusal can say whose
/// it is.
pub const BROKER_OWNER: i64 = 0;

pub mod access;
mod aliases;
mod bandwidth;
mod map;
pub mod names;
mod remote;
mod requests;
mod table;

pub use access::{AccessPolicy, Credential, CredentialCache, IpAction};
pub use bandwidth::{Bandwidth, Direction, EPISODE_GAP, Pace, PacedIo, Pacer};
pub use remote::{REMOTE_SESSION, by_holder, holder_counts};

pub use requests::{
    DEFAULT_REQUEST_LOG_ENTRIES, Followed, LogFeed, RequestEntry, RequestLog, SUBSCRIBER_BACKLOG,
};
pub use table::{
    BindError, Held, Lookup, OwnLimits, OwnerLimits, Registry, Route, RouteKind, RouteStats,
    SessionId, StickyKey, tcp_name, tcp_port,
};

/// Opens public TCP ports for raw TCP tunnels. Implemented by the edge (which owns listeners);
/// the SSH server asks it for a port before binding the route `tcp:PORT`.
pub trait PortAllocator: Send + Sync + 'static {
    /// Starts listening on `preferred` if given (or keeps listening, if it already does), else
    /// on a free port of the configured range; returns the port.
    fn allocate(&self, preferred: Option<u16>) -> Result<u16, String>;
    /// The host name printed in `tcp://HOST:PORT`.
    fn public_host(&self) -> String;
}

use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream to a tunnel owner's local service.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A boxed [`Stream`], what an [`Endpoint`] hands out.
pub type BoxStream = Pin<Box<dyn Stream>>;

/// Why an endpoint could not produce a stream. The edge turns each into a different page.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The owner's client could not connect to its local target (nothing listening there).
    #[error("the tunnel's local service refused the connection: {0}")]
    Refused(String),
    /// The owner's session is gone or did not answer in time.
    #[error("the tunnel is not reachable: {0}")]
    Unreachable(String),
    /// The node of the cluster that holds the tunnel did not answer (it may be gone; the
    /// owner's reconnection will land elsewhere): the visitor should retry shortly.
    #[error("the node holding the tunnel is not reachable: {0}")]
    Away(String),
}

/// Where a live name leads: implemented by the SSH server for each bound forward.
#[async_trait::async_trait]
pub trait Endpoint: Send + Sync + 'static {
    /// Opens a new stream to the owner's local service on behalf of `visitor`.
    async fn open(&self, visitor: SocketAddr) -> Result<BoxStream, OpenError>;
    /// Shows a line of text to the owner (their SSH session), never blocking: lines may be
    /// dropped if the owner's terminal does not keep up.
    fn notify(&self, line: String);
    /// How the owner asked for this forward, for the owner's log lines ("localhost:41234").
    fn describe(&self) -> String;
    /// The tunnel thread (`warren-shards`) the owner's session runs on, where visitors of this
    /// forward are best served; `None` for anywhere.
    fn shard(&self) -> Option<usize> {
        None
    }
    /// The cluster node whose session serves this forward, when that is another node.
    fn node(&self) -> Option<&str> {
        None
    }
    /// A request a visitor made on this node to a tunnel another node holds, for the log that
    /// node keeps of all its visitors' requests, wherever they landed. Dropped by default.
    fn record(&self, _entry: RequestEntry) {}
    /// The request log the node holding this tunnel keeps, read by `owner`: its recent entries
    /// and, with `follow`, each one after them. Only another node's tunnel has one elsewhere;
    /// `Refused` when that node keeps no log of the name for `owner`.
    async fn request_log(&self, _owner: i64, _follow: bool) -> Result<LogFeed, OpenError> {
        Err(OpenError::Unreachable(
            "this tunnel's log is kept on this node".into(),
        ))
    }
    /// This node's counters of a tunnel another node holds, for that node's
    /// ([`Route::add_elsewhere`]); called about once a second. Whether they changed since the
    /// last report (dropped, and `false`, by default).
    fn report(&self, _stats: RouteStats) -> bool {
        false
    }
    /// The counters of `names`, each held on the node that holds this tunnel, as that node has
    /// them with every node's visitors ([`Route::cluster_stats`]); names it does not hold are
    /// left out. Only another node's tunnel has such a node.
    async fn holder_stats(
        &self,
        _names: Vec<String>,
    ) -> Result<std::collections::HashMap<String, RouteStats>, OpenError> {
        Err(OpenError::Unreachable(
            "this tunnel is held on this node".into(),
        ))
    }
}

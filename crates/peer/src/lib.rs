//! The hop between nodes of a cluster.
//!
//! A visitor may land on any node; the tunnel's SSH session is on one. The node the visitor
//! reached binds the name with a [`PeerEndpoint`] (see `warren_registry::Registry::bind_remote`)
//! and serves the visitor as it would a local tunnel (access rules, headers, the request's log
//! entry, TLS termination); each stream the edge opens goes to the holding node's cluster listener
//! ([`serve`]), which opens the channel to the owner and copies bytes.
//!
//! The channel is TLS 1.3 with a client certificate both ways, under a cluster CA that the
//! first node generates and keeps in the shared database ([`ClusterCa`]): every node issues
//! its own certificate from it at start ([`NodeTls`]), so only processes that can read the
//! database can join, whatever their address. Each stream starts with a PROXY protocol v2
//! header (HAProxy's binary format, `ppp`) carrying the visitor's address and, as its
//! authority TLV, the tunnel's name; the listener answers with one status (opened, refused by
//! the owner's side, unreachable, not held here) before the bytes flow.
//!
//! The node holding a tunnel keeps what is the tunnel's across the cluster: each other node
//! sends it, on one stream, its visitors' lines for the owner, request log entries and counts,
//! and asks it for the log and the counters when a tenant looks (`ask`).
#![warn(missing_docs)]

mod ask;
mod dial;
mod readahead;
mod serve;
mod tls;
mod wire;

pub use dial::{Dialer, PeerEndpoint, report_counts};
pub use serve::{Patience, serve};
pub use tls::{CLUSTER_NAME, ClusterCa, NodeTls};

/// What can go wrong between nodes.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The cluster CA or a node certificate could not be made or used.
    #[error("cluster certificate: {0}")]
    Certificate(String),
    /// The stream did not start with a PROXY v2 header naming a tunnel.
    #[error("bad peer header: {0}")]
    Header(String),
    /// The other node said nothing for longer than the listener waits ([`Patience`]).
    #[error("{0}")]
    Quiet(&'static str),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

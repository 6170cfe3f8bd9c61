//! The cluster's hop for whole connections.
//!
//! A visitor who lands on a node that does not hold the tunnel their first request head (plain
//! HTTP) or ClientHello (HTTPS) names has the connection handed to the node that does: this
//! node relays bytes ([`relay`]) and the holder serves the connection as if the visitor had
//! reached it ([`handed`]): it parses HTTP once, terminates TLS (every node has every
//! certificate), applies the access rules, records the request log, tells the owner, and
//! counts the tunnel's limits. Forwarding request by request instead made the landing node do
//! all of the HTTP work too: 33 us of broker CPU per request there plus 25 at the holder,
//! against 23 for a visitor who reached the holder directly (bench/run `warren_hop`,
//! docs/ARCHITECTURE.md).
//!
//! What a hand-off cannot carry stays request by request: a first head split so that its Host
//! was not in the first read, HTTP/2 over TLS decided by ALPN (handed over too: the holder
//! negotiates it), and any connection whose hand-off fails (the holder's view changed): the
//! edge then serves it here and forwards its requests.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};
use warren_registry::{BoxStream, Handoff, Route};

use crate::Edge;
use crate::admit::Admitted;
use crate::rewind::Rewind;

/// On the landing node: a stream to the node holding `route` that will carry the visitor's
/// whole connection; `None` if that node cannot take it now (the caller serves it here).
pub(crate) async fn open(route: &Route, visitor: SocketAddr, how: Handoff) -> Option<BoxStream> {
    match route.endpoint.hand_off(visitor, how).await? {
        Ok(stream) => Some(stream),
        Err(e) => {
            debug!(tunnel = %route.name, error = %e, "hand-off refused; forwarding requests");
            None
        }
    }
}

/// On the landing node: relays the visitor's bytes (`first`: those already read, replayed
/// first) to and from the holder until either side closes. The visitor keeps its place in
/// this node's per-IP limits meanwhile; the holder applies the head deadline and the rest.
pub(crate) async fn relay(
    mut socket: TcpStream,
    first: Vec<u8>,
    mut holder: BoxStream,
    admitted: Admitted,
) {
    let Admitted { mut ticket, .. } = admitted;
    ticket.identified();
    let mut visitor = Rewind::new(first, &mut socket);
    let _ = tokio::io::copy_bidirectional(&mut visitor, &mut holder).await;
    drop(ticket);
}

/// On the holding node: what serves the connections other nodes hand over, given to the
/// cluster listener (`warren_peer::serve`). Each is admitted by this node's limits under the
/// visitor's address (carried in the hand-off header) and then served exactly as a connection
/// accepted on this node's HTTP or HTTPS listener.
pub fn handed(
    edge: Arc<Edge>,
    config: Arc<ServerConfig>,
    draining: CancellationToken,
) -> impl Fn(BoxStream, SocketAddr, Handoff) + Send + Sync + 'static {
    move |stream, visitor, how| {
        let admitted = match edge.admit(visitor) {
            Ok(admitted) => admitted,
            Err(why) => {
                debug!(%visitor, ?why, "handed-over visitor not admitted");
                return;
            }
        };
        let (edge, config, draining) = (edge.clone(), config.clone(), draining.clone());
        // Boxed as `dyn Send` branch by branch: rustc cannot prove `Send` for the generic
        // connection futures inside one spawned future ("not general enough", its known limit
        // with higher-ranked lifetimes), and proves it for each when coerced here.
        let served: Pin<Box<dyn Future<Output = ()> + Send>> = match how {
            Handoff::Http => Box::pin(crate::serve_http(
                edge.clone(),
                stream,
                None,
                visitor,
                draining,
                admitted,
            )),
            Handoff::Tls => Box::pin(crate::tls::serve_handed(
                edge.clone(),
                config,
                stream,
                visitor,
                draining,
                admitted,
            )),
        };
        tokio::spawn(
            edge.visitors
                .track(served)
                .instrument(visitor_span!("handed visitor", visitor)),
        );
    }
}

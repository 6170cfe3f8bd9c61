//! The listening side: streams from other nodes, each to a tunnel of this node.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use warren_registry::{Lookup, OpenError, Registry};

use crate::wire::{self, NOT_HERE, OPENED, REFUSED, UNREACHABLE};
use crate::{NodeTls, PeerError};

/// A peer must finish its handshake and header in this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy buffers per direction: the size of an SSH channel's packets.
const BUFFER: usize = 32 << 10;

/// Serves other nodes' streams on `listener` until `shutdown`. A peer without a certificate
/// from the cluster CA is cut at the handshake; a name no session of this node serves is
/// answered "not here" (a peer's view was stale), never forwarded again.
pub async fn serve(
    listener: TcpListener,
    tls: &NodeTls,
    registry: Arc<Registry>,
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
        tokio::spawn(async move {
            if let Err(e) = handle(sock, acceptor, &registry).await {
                debug!(%peer, error = %e, "cluster stream ended");
            }
        });
    }
}

async fn handle(
    sock: TcpStream,
    acceptor: TlsAcceptor,
    registry: &Registry,
) -> Result<(), PeerError> {
    let _ = sock.set_nodelay(true);
    let timed_out = || PeerError::Header("handshake timed out".into());
    let (mut tls, visitor, name) = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut tls = acceptor.accept(sock).await?;
        let (visitor, name) = wire::read_header(&mut tls).await?;
        Ok::<_, PeerError>((tls, visitor, name))
    })
    .await
    .map_err(|_| timed_out())??;
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
    // only carried.
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut tls, &mut stream, BUFFER, BUFFER).await;
    Ok(())
}

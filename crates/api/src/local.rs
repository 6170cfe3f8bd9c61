//! The API as a tunnel endpoint: the edge reaches the console host the way it reaches any
//! tunnel, through the registry, and this endpoint answers each stream it opens with the API's
//! router over an in-memory pipe.
//!
//! So the console host gets, for free, everything the edge does for tunnels: the same
//! certificate and TLS termination, the HTTPS redirect, header limits and timeouts, forwarded
//! headers, connection caps. The cost is one HTTP/1.1 encode and decode per console request,
//! nothing beside a browser's or a script's pace. The visitor's address, which the edge passes
//! to `open`, reaches handlers as a request extension ([`crate::auth::ClientIp`]) without
//! trusting any header.

use std::net::SocketAddr;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use warren_registry::{BoxStream, Endpoint, OpenError};

/// Bytes buffered in each direction of the in-memory pipe.
const PIPE_BYTES: usize = 64 * 1024;

/// Serves `router` to each stream the edge opens.
pub struct LocalEndpoint {
    router: Router,
}

impl LocalEndpoint {
    /// An endpoint answering with `router`.
    pub fn new(router: Router) -> Self {
        Self { router }
    }
}

#[async_trait::async_trait]
impl Endpoint for LocalEndpoint {
    async fn open(&self, visitor: SocketAddr) -> Result<BoxStream, OpenError> {
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        let router = self.router.clone().layer(axum::Extension(visitor));
        tokio::spawn(async move {
            let service = TowerToHyperService::new(router);
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(theirs), service)
                .await
            {
                tracing::debug!(error = %e, "console connection ended");
            }
        });
        Ok(Box::pin(ours))
    }

    fn notify(&self, _line: String) {}

    fn describe(&self) -> String {
        "the broker's API".into()
    }
}

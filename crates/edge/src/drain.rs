//! Draining at shutdown. When the token given to [`run`](crate::run) and
//! [`run_tls`](crate::run_tls) fires, the listeners stop accepting and each visitor connection
//! finishes the request it is serving and closes (hyper's graceful shutdown: no further
//! request on a keep-alive connection, an HTTP/2 GOAWAY). The broker then waits for them with
//! [`Edge::drain`](crate::Edge::drain), up to its deadline, and cuts whatever is still open
//! (long downloads, WebSockets, TLS passthrough streams, which have no request boundary).

use std::pin::Pin;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The visitor connections being served, and the switch that cuts them.
#[derive(Debug, Default)]
pub(crate) struct Visitors {
    pub(crate) tracker: TaskTracker,
    pub(crate) cut: CancellationToken,
}

impl Visitors {
    /// `conn`, counted until it ends and dropped (the connection closed) once the connections
    /// are cut.
    pub(crate) fn track<F: Future<Output = ()>>(
        &self,
        conn: F,
    ) -> impl Future<Output = ()> + use<F> {
        let cut = self.cut.clone();
        self.tracker.track_future(async move {
            tokio::select! {
                _ = conn => {}
                _ = cut.cancelled() => {}
            }
        })
    }
}

/// Serves `conn` to its end; once `draining` fires, calls `graceful` on it (the request in
/// flight finishes, then the connection closes) and goes on serving it.
pub(crate) async fn graceful<C: Future>(
    conn: C,
    draining: &CancellationToken,
    graceful: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    tokio::pin!(conn);
    tokio::select! {
        out = conn.as_mut() => return out,
        _ = draining.cancelled() => {}
    }
    graceful(conn.as_mut());
    conn.await
}

//! Upstream connections (HTTP/1.1 over a `forwarded-tcpip` channel) kept for reuse: a visitor
//! connection's own, and each tunnel's pool, which outlives its visitors.
//!
//! A visitor connection reuses the upstream it used last; when it closes, its upstreams go to
//! the tunnel's pool, where the next visitor finds one without paying a channel open. The pool
//! lives in the registry's `Route::idle`, which is opaque there (`Box<dyn Any>`): this module is
//! the only one that puts anything in it or takes anything out, so the downcast is here alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use warren_registry::Route;
use warren_shards::Shards;

use crate::Edge;

/// One upstream connection: the sending half of an HTTP/1.1 client over an SSH channel (or a
/// hop to the node that holds the tunnel), carrying visitors' request bodies (counted on their
/// way), and the tunnel thread its connection task runs on.
pub(crate) struct Upstream {
    pub(crate) send: SendRequest<crate::meter::RequestBody>,
    pub(crate) thread: Option<usize>,
}

/// Idle upstream connections kept per tunnel (and per visitor connection).
const MAX_IDLE: usize = 32;

/// How long an upstream connection waits in the tunnel's pool for a new visitor before it is
/// closed. Short, because an idle channel is not free for the owner: OpenSSH's client walks
/// every open channel (and polls its socket) on each turn of its loop, so a download behind
/// 32 idle pooled channels cost the client 2.45 CPU-s/GiB instead of 1.85, and ran at 415
/// MB/s instead of 549 (same broker, same run). Bursts (a page and its assets) reuse the pool
/// within this; a later visitor pays one channel open.
const POOL_IDLE: Duration = Duration::from_secs(2);

/// The most requests one visitor connection may have waiting on upstream connections at once,
/// and so the most upstream connections (SSH channels) it makes a tunnel open. An HTTP/2
/// visitor may send 128 requests at once on the one visitor slot it holds
/// (`Route::connections`): without a cap that was 128 channels and 128 connections to the
/// owner's service, which counts on the tunnel limit to bound it. Browsers open about 6
/// connections per host over HTTP/1.1, so 8 in flight is what a page load already looks like;
/// further requests wait for one of these, they do not fail.
const MAX_IN_FLIGHT: usize = 8;

/// The upstream side of one visitor connection: the upstreams it used last, and its share of
/// upstream work in flight.
pub(crate) struct VisitorUpstreams {
    /// Upstream connections this visitor connection used last, reused by its next requests
    /// (HTTP/2 may have several). Handed to the tunnel's pool when it closes. A std mutex held
    /// for a push or a pop, never across an await.
    idle: Mutex<Vec<(Arc<Route>, Upstream)>>,
    /// Requests from picking an upstream until their response head is in and the upstream is
    /// back in `idle`: at most [`MAX_IN_FLIGHT`]. An atomic, not a tokio `Semaphore`, whose
    /// release takes its waiters' lock every time: here only a request that has to wait locks.
    in_flight: AtomicUsize,
    /// Wakes a request waiting for its turn when one ends.
    ended: Notify,
}

/// A request's place among a visitor connection's [`MAX_IN_FLIGHT`]; given back by
/// [`VisitorUpstreams::keep`], or dropped when the upstream is not kept.
pub(crate) struct InFlight<'a> {
    of: &'a VisitorUpstreams,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.of.in_flight.fetch_sub(1, Ordering::AcqRel);
        // Lock-free unless someone waits; with no waiter it leaves a permit, which costs the
        // next waiter one extra look at the count.
        self.of.ended.notify_one();
    }
}

impl VisitorUpstreams {
    pub(crate) fn new() -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            ended: Notify::new(),
        }
    }

    /// Waits until fewer than [`MAX_IN_FLIGHT`] of this connection's requests are at an
    /// upstream, and counts this one in.
    pub(crate) async fn start(&self) -> InFlight<'_> {
        if self.try_start() {
            return InFlight { of: self };
        }
        loop {
            // Registered before looking again, so an end between the look and the wait wakes us.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.try_start() {
                return InFlight { of: self };
            }
            ended.await;
        }
    }

    fn try_start(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .is_ok()
    }

    /// An upstream this visitor connection used before for `route`, ready or still finishing
    /// its last response. Requests that hold an [`InFlight`] and find none here open a new one,
    /// so `route` never has more than [`MAX_IN_FLIGHT`] upstreams for this visitor connection.
    pub(crate) fn take_own(&self, route: &Arc<Route>) -> Option<Upstream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let i = idle.iter().position(|(r, _)| Arc::ptr_eq(r, route))?;
        Some(idle.swap_remove(i).1)
    }

    /// Keeps `upstream` for this connection's next request, then lets the next request in
    /// (in that order, so that request finds it instead of opening another).
    pub(crate) fn keep(&self, route: &Arc<Route>, upstream: Upstream, in_flight: InFlight<'_>) {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push((route.clone(), upstream));
            }
        }
        drop(in_flight);
    }
}

impl Drop for VisitorUpstreams {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for (route, upstream) in idle {
            // A route only this list still holds is gone: let its connections close.
            if Arc::strong_count(&route) > 1 {
                put(&route, upstream);
            }
        }
    }
}

/// An upstream connection in a tunnel's pool, and since when it has waited there.
struct Pooled {
    upstream: Upstream,
    since: Instant,
}

/// An idle upstream from the tunnel's pool, if one is still usable: one whose connection runs
/// on the caller's thread first. A local tunnel's visitors and upstreams all run on its
/// session's thread, but another node's tunnel has no such thread, so its visitors land on
/// every one in turn; a visitor served by an upstream on another thread pays a cross-thread
/// wake-up for each chunk, each way, for as long as its transfer lasts.
pub(crate) async fn take(route: &Route) -> Option<Upstream> {
    let here = Shards::current();
    loop {
        let candidate = {
            let mut idle = route.idle.lock().unwrap_or_else(|p| p.into_inner());
            let on_this_thread = idle.iter().rposition(|p| {
                p.downcast_ref::<Pooled>()
                    .is_some_and(|p| p.upstream.thread == here)
            });
            match on_this_thread {
                Some(i) => idle.swap_remove(i),
                None => idle.pop()?,
            }
        };
        let Ok(pooled) = candidate.downcast::<Pooled>() else {
            warn!(tunnel = %route.name, "dropped a foreign entry from the upstream pool");
            continue;
        };
        let mut upstream = pooled.upstream;
        if upstream.send.is_closed() {
            continue;
        }
        // Returned at the end of its last response, it is ready at once or very nearly.
        if let Ok(Ok(())) =
            tokio::time::timeout(Duration::from_millis(50), upstream.send.ready()).await
        {
            return Some(upstream);
        }
    }
}

/// Leaves `upstream` in the tunnel's pool for later visitors.
fn put(route: &Route, upstream: Upstream) {
    let mut idle = route.idle.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < MAX_IDLE && !upstream.send.is_closed() {
        idle.push(Box::new(Pooled {
            upstream,
            since: Instant::now(),
        }));
    }
}

/// Closes, every second, what has waited in a tunnel's pool longer than [`POOL_IDLE`] (one
/// task for all tunnels, on the main runtime; a lock per tunnel with a pool).
pub(crate) async fn expire(edge: Arc<Edge>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for route in edge.registry.routes() {
            route
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|p| {
                    p.downcast_ref::<Pooled>().is_some_and(|p| {
                        p.since.elapsed() < POOL_IDLE && !p.upstream.send.is_closed()
                    })
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use hyper_util::rt::TokioIo;
    use warren_registry::{BoxStream, Endpoint, OpenError, Registry, RouteKind};

    use super::*;

    struct Nowhere;

    #[async_trait::async_trait]
    impl Endpoint for Nowhere {
        async fn open(&self, _: SocketAddr) -> Result<BoxStream, OpenError> {
            Err(OpenError::Unreachable("test".into()))
        }
        fn notify(&self, _: String) {}
        fn describe(&self) -> String {
            "test".into()
        }
    }

    /// An HTTP/1.1 client over an in-memory pipe (its server side never answers: the pool only
    /// asks whether it is ready), labelled as running on `thread`.
    async fn upstream(thread: Option<usize>) -> Upstream {
        let (near, far) = tokio::io::duplex(1024);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(near))
            .await
            .unwrap_or_else(|e| panic!("handshake: {e}"));
        tokio::spawn(async move {
            let _far = far;
            let _ = conn.await;
        });
        Upstream { send, thread }
    }

    /// Which thread's upstream `take` gives on tunnel thread `on`.
    async fn taken_on(shards: &Shards, on: usize, route: &Arc<Route>) -> Option<usize> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let route = route.clone();
        shards.spawn(Some(on), async move {
            let _ = tx.send(take(&route).await.map(|u| u.thread));
        });
        rx.await
            .unwrap_or_else(|e| panic!("the take on thread {on} did not end: {e}"))
            .unwrap_or_else(|| panic!("nothing taken on thread {on}"))
    }

    #[tokio::test]
    async fn a_visitor_gets_a_pooled_upstream_of_its_own_thread_first() {
        let shards = Shards::start(2).unwrap_or_else(|e| panic!("threads: {e}"));
        let registry = Registry::new(Duration::from_secs(60), 4);
        let (route, _) = registry
            .bind("app", 1, 1, RouteKind::Http, Arc::new(Nowhere))
            .unwrap_or_else(|e| panic!("bind: {e}"));
        // Thread 1's upstream went in last: a plain stack would give it to thread 0 too.
        put(&route, upstream(Some(0)).await);
        put(&route, upstream(Some(1)).await);
        assert_eq!(taken_on(&shards, 0, &route).await, Some(0));
        assert_eq!(taken_on(&shards, 1, &route).await, Some(1));
        // None of its own thread left: another thread's, rather than a new channel.
        put(&route, upstream(Some(1)).await);
        assert_eq!(taken_on(&shards, 0, &route).await, Some(1));
        assert!(take(&route).await.is_none(), "the pool should be empty");
    }

    #[tokio::test]
    async fn past_the_cap_requests_wait_for_one_to_end() {
        let upstreams = VisitorUpstreams::new();
        let mut held = Vec::new();
        for _ in 0..MAX_IN_FLIGHT {
            held.push(upstreams.start().await);
        }
        let next = upstreams.start();
        tokio::pin!(next);
        let early = tokio::time::timeout(Duration::from_millis(50), next.as_mut()).await;
        assert!(early.is_err(), "a request past the cap did not wait");
        // One ends: the waiter gets its turn.
        held.pop();
        let turn = tokio::time::timeout(Duration::from_secs(5), next).await;
        assert!(turn.is_ok(), "the waiter was not woken");
        assert_eq!(upstreams.in_flight.load(Ordering::Acquire), MAX_IN_FLIGHT);
        drop(turn);
        drop(held);
        assert_eq!(upstreams.in_flight.load(Ordering::Acquire), 0);
    }
}

//! Byte counting between visitors and origins, for a tunnel's live counters
//! (`Route::count_bytes`) and its request log: request bodies on their way to the origin,
//! response bodies on their way back; raw streams (TCP, TLS passthrough, upgraded
//! connections) are counted by `warren_registry::PacedIo`, which the holding node of a cluster
//! also paces hop streams with. Each counts as the bytes move, so a long download shows while
//! it runs.
//!
//! The cost is an add on the tunnel's own counters per body frame or socket read/write;
//! a tunnel's visitors are served on its one tunnel thread, so those cache lines stay put.
//!
//! The same places pace a tunnel held to `max_tunnel_bytes_per_sec` ([`Pacer`]): each chunk
//! moved is paid for in the route's bucket, and the next one waits while the bucket is in debt.
//! Off, that is one branch per chunk (see `pacing_cost` for the measured figure).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use warren_registry::{Direction, Pacer, Route};

use crate::record::Pending;

/// A visitor's request body on its way to the origin, counted.
pub(crate) struct RequestBody {
    inner: Incoming,
    route: Arc<Route>,
    /// The request's own count, for its log entry (when the tunnel keeps one).
    tally: Option<Arc<AtomicU64>>,
    pace: Pacer,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, route: Arc<Route>, tally: Option<Arc<AtomicU64>>) -> Self {
        Self {
            inner,
            route,
            tally,
            pace: Pacer::default(),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        ready!(this.pace.poll_wait(cx));
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            this.route.count_bytes(n, 0);
            this.pace.paid(&this.route, Direction::Upload, n);
            if let Some(tally) = &this.tally {
                tally.fetch_add(n, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body on its way to the visitor, counted; its request's log entry (with the
/// status sent) is written when it is dropped, which hyper does once the body has ended or the
/// visitor has gone.
pub(crate) struct Metered<B: Body> {
    inner: B,
    route: Arc<Route>,
    sent: u64,
    ended: bool,
    entry: Option<(Pending, u16)>,
    pace: Pacer,
}

impl<B: Body> Metered<B> {
    pub(crate) fn new(inner: B, route: Arc<Route>, entry: Option<(Pending, u16)>) -> Self {
        Self {
            inner,
            route,
            sent: 0,
            ended: false,
            entry,
            pace: Pacer::default(),
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Metered<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        ready!(this.pace.poll_wait(cx));
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.sent += n;
                    this.route.count_bytes(0, n);
                    this.pace.paid(&this.route, Direction::Download, n);
                }
            }
            None => this.ended = true,
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for Metered<B> {
    fn drop(&mut self) {
        if let Some((pending, status)) = self.entry.take() {
            // hyper stops polling once `is_end_stream` says so (and never polls a HEAD
            // response's body): that is an end too.
            let complete = self.ended || self.inner.is_end_stream();
            pending.record(status, self.sent, complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use tokio::io::AsyncReadExt;
    use warren_registry::{BoxStream, Endpoint, OpenError, PacedIo, Registry, RouteKind};

    use super::*;

    /// An endpoint that keeps the lines its owner would see.
    #[derive(Default)]
    struct Owner(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl Endpoint for Owner {
        async fn open(&self, _: SocketAddr) -> Result<BoxStream, OpenError> {
            Err(OpenError::Unreachable("test".into()))
        }
        fn notify(&self, line: String) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
        fn describe(&self) -> String {
            "test".into()
        }
    }

    fn route(bytes_per_sec: u64) -> (Arc<Route>, Arc<Owner>) {
        let owner = Arc::new(Owner::default());
        let registry = Registry::new(Duration::from_secs(60), 4).with_bandwidth(bytes_per_sec);
        let (route, _) = registry
            .bind("app", 1, 1, RouteKind::Tcp, owner.clone())
            .unwrap_or_else(|e| panic!("bind: {e}"));
        (route, owner)
    }

    /// Reads `total` bytes through a metered stream in 16 KiB reads.
    async fn pump(route: &Route, total: usize) -> u64 {
        let mut io = PacedIo::visitor(tokio::io::repeat(7), route);
        let mut buf = vec![0u8; 16 << 10];
        let mut moved = 0;
        while moved < total {
            let want = buf.len().min(total - moved);
            let Ok(n) = io.read(&mut buf[..want]).await else {
                break;
            };
            moved += n;
        }
        io.read
    }

    #[tokio::test]
    async fn a_held_stream_moves_at_the_rate_and_tells_its_owner_once() {
        // 1 MB/s: its burst (1 MB) at once, then 0.5 MB at the rate.
        let (route, owner) = route(1_000_000);
        let started = Instant::now();
        assert_eq!(pump(&route, 1_500_000).await, 1_500_000);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        let lines = owner.0.lock().map(|l| l.clone()).unwrap_or_default();
        assert_eq!(
            lines,
            [
                "Warren: app upload held to 1000000 bytes/s (max_tunnel_bytes_per_sec); visitors are slowed, not refused"
            ],
            "one line for the whole episode"
        );
        assert_eq!(route.stats().bytes_in, 1_500_000);
    }

    /// What pacing costs per chunk, with the limit off and with a limit too high to ever
    /// pause: the pacer alone (wait check and payment), and 1 KiB reads from memory through a
    /// metered stream.
    /// `cargo test -p warren-edge --release -- --ignored --nocapture pacing_cost`
    #[tokio::test]
    #[ignore]
    async fn pacing_cost() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for round in 0..2 {
            for (what, rate) in [("off", 0), ("on", u64::MAX / 4)] {
                let (route, _) = route(rate);
                let mut pacer = Pacer::default();
                let n = 20_000_000u32;
                let started = Instant::now();
                for _ in 0..n {
                    let _ = std::hint::black_box(pacer.poll_wait(&mut cx));
                    pacer.paid(std::hint::black_box(&route), Direction::Download, 16_384);
                }
                let alone = started.elapsed().as_nanos() as f64 / f64::from(n);
                let total = 4usize << 30;
                let started = Instant::now();
                let mut io = PacedIo::visitor(tokio::io::repeat(7), &route);
                let mut buf = [0u8; 1024];
                while (io.read as usize) < total {
                    let _ = io.read(&mut buf).await;
                }
                let stream = started.elapsed().as_nanos() as f64 / (total / 1024) as f64;
                println!(
                    "round {round}, pacing {what}: pacer {alone:.1} ns per chunk; 1 KiB read through PacedIo {stream:.1} ns"
                );
            }
        }
    }
}

//! `max_tunnel_bytes_per_sec`: a token bucket per tunnel and direction, which the edge draws
//! on as bytes move between a visitor and the SSH channel.
//!
//! One bucket per route and direction, shared by all its visitors: the limit is the owner's
//! share of the broker's link, whatever number of connections a visitor opens (a per-connection
//! limit would be multiplied by any download manager). Upload and download are separate so a
//! large upload does not stall the responses the origin sends meanwhile.
//!
//! The bucket is kept as a virtual time (GCRA, as governor does it): the instant by which every
//! byte taken so far has been paid for at the rate. Taking `n` bytes pushes it on by `n / rate`
//! with one atomic read-modify-write; when it runs more than the burst (one second of the rate)
//! ahead of now, the caller waits the difference. Bytes are moved first and paid for after, so
//! no chunk is ever split or held back: the copy loop pauses between chunks instead. With the
//! limit off there is no bucket at all, and the edge pays one branch per chunk.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::Route;

const NANOS: u128 = 1_000_000_000;
/// How far ahead of now the virtual time may run before anyone waits: one second's worth of
/// bytes goes through at once (a page and its assets, a short burst of a terminal session).
const BURST: Duration = Duration::from_secs(1);
/// A throttled chunk after this long without one starts a new episode (one line to the owner).
pub const EPISODE_GAP: Duration = Duration::from_secs(10);

/// Which way bytes move through a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the visitor to the origin.
    Upload,
    /// From the origin to the visitor.
    Download,
}

impl Direction {
    /// The word the owner reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

/// How long a caller waits after moving a chunk, and whether this chunk began an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Time to pause before moving the next chunk.
    pub wait: Duration,
    /// The first throttled chunk after [`EPISODE_GAP`] without one: tell the owner, once.
    pub episode: bool,
}

#[derive(Debug, Default)]
struct Lane {
    /// Nanoseconds after `base` by which everything taken is paid for.
    paid_until: AtomicU64,
    /// Nanoseconds after `base`, plus one, of the last chunk that had to wait (0: none yet).
    last_wait: AtomicU64,
}

/// A tunnel's two buckets.
#[derive(Debug)]
pub struct Bandwidth {
    rate: u64,
    base: Instant,
    up: Lane,
    down: Lane,
    /// Episodes over every tunnel of the registry, for the limit-hit metric.
    episodes: Arc<AtomicU64>,
    /// The owner's own quota rather than the broker's setting: said in the owner's notice.
    quota: bool,
}

impl Bandwidth {
    /// `rate` bytes per second each way (at least 1); episodes are counted into `episodes`.
    pub fn new(rate: u64, episodes: Arc<AtomicU64>) -> Self {
        Self {
            rate: rate.max(1),
            base: Instant::now(),
            up: Lane::default(),
            down: Lane::default(),
            episodes,
            quota: false,
        }
    }

    /// Marks the limit as the owner's own quota (admin-set), not the broker's setting.
    pub fn of_quota(mut self) -> Self {
        self.quota = true;
        self
    }

    /// Where the limit comes from, as the owner is told: the setting or their quota.
    pub fn source(&self) -> &'static str {
        if self.quota {
            "quota max_tunnel_bytes_per_sec"
        } else {
            "max_tunnel_bytes_per_sec"
        }
    }

    /// The limit, bytes per second each way.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Pays for `n` bytes moved `dir`; `Some` when the caller must pause before the next chunk.
    pub fn take(&self, dir: Direction, n: u64) -> Option<Pace> {
        self.take_at(dir, n, Instant::now())
    }

    /// [`Bandwidth::take`] at `now`.
    pub fn take_at(&self, dir: Direction, n: u64, now: Instant) -> Option<Pace> {
        let lane = match dir {
            Direction::Upload => &self.up,
            Direction::Download => &self.down,
        };
        let now = now.saturating_duration_since(self.base).as_nanos() as u64;
        let cost = (u128::from(n) * NANOS / u128::from(self.rate)).min(u128::from(u64::MAX / 4));
        let mut paid = 0;
        // Never fails: the closure always returns Some.
        let _ = lane
            .paid_until
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |before| {
                paid = before.max(now).saturating_add(cost as u64);
                Some(paid)
            });
        let ahead = paid.saturating_sub(now);
        let burst = BURST.as_nanos() as u64;
        if ahead <= burst {
            return None;
        }
        let last = lane.last_wait.swap(now + 1, Ordering::Relaxed);
        let episode = last == 0 || (now + 1).saturating_sub(last) > EPISODE_GAP.as_nanos() as u64;
        if episode {
            self.episodes.fetch_add(1, Ordering::Relaxed);
        }
        Some(Pace {
            wait: Duration::from_nanos(ahead - burst),
            episode,
        })
    }
}

/// A pause owed to a tunnel's bandwidth limit, for one body or one way of a stream.
#[derive(Default)]
pub struct Pacer {
    /// The timer, kept once made (reset for each pause); `armed` while a pause runs.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Pacer {
    /// Ready once the pause owed (if any) is over: one branch when there is none.
    #[inline]
    pub fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed
            && let Some(sleep) = &mut self.sleep
        {
            ready!(sleep.as_mut().poll(cx));
            self.armed = false;
        }
        Poll::Ready(())
    }

    /// `n` bytes moved `dir` through `route`: paid for, and a pause owed if the bucket is in
    /// debt. The first pause of an episode tells the owner, in one line.
    #[inline]
    pub fn paid(&mut self, route: &Route, dir: Direction, n: u64) {
        let Some(bandwidth) = &route.bandwidth else {
            return;
        };
        let Some(pace) = bandwidth.take(dir, n) else {
            return;
        };
        if pace.episode {
            route.endpoint.notify(format!(
                "Warren: {} {} held to {} bytes/s ({}); visitors are slowed, not refused",
                route.name,
                dir.as_str(),
                bandwidth.rate(),
                bandwidth.source()
            ));
        }
        let until = tokio::time::Instant::from_std(Instant::now() + pace.wait);
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(until),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(until))),
        }
        self.armed = true;
    }
}

/// A stream through a tunnel held to its bandwidth limit (reads are uploads, writes
/// downloads) and, for a visitor's own stream, counted in the tunnel's totals. A visitor's
/// stream (TCP, TLS passthrough, an upgraded connection) on the node it reached is
/// [`PacedIo::visitor`]; a hop's stream on the holding node is [`PacedIo::hop`], paced in the
/// same bucket as that node's own visitors but counted where the visitor is.
pub struct PacedIo<'a, T> {
    inner: T,
    route: &'a Route,
    /// Whether the bytes count in the tunnel's totals.
    counted: bool,
    /// Bytes read so far.
    pub read: u64,
    /// Bytes written so far.
    pub written: u64,
    /// Each way its own pause: a paused upload does not hold back the download.
    pace_up: Pacer,
    pace_down: Pacer,
}

impl<'a, T> PacedIo<'a, T> {
    /// A visitor's stream: paced and counted.
    pub fn visitor(inner: T, route: &'a Route) -> Self {
        Self::new(inner, route, true)
    }

    /// Another node's stream to this node's tunnel: paced only.
    pub fn hop(inner: T, route: &'a Route) -> Self {
        Self::new(inner, route, false)
    }

    fn new(inner: T, route: &'a Route, counted: bool) -> Self {
        Self {
            inner,
            route,
            counted,
            read: 0,
            written: 0,
            pace_up: Pacer::default(),
            pace_down: Pacer::default(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PacedIo<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.pace_up.poll_wait(cx));
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = (buf.filled().len() - before) as u64;
        this.read += n;
        if this.counted {
            this.route.count_bytes(n, 0);
        }
        this.pace_up.paid(this.route, Direction::Upload, n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PacedIo<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.pace_down.poll_wait(cx));
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.pace_down.poll_wait(cx));
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T> PacedIo<'_, T> {
    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        if self.counted {
            self.route.count_bytes(0, n as u64);
        }
        self.pace_down
            .paid(self.route, Direction::Download, n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_second_of_burst_then_the_rate_and_one_episode_per_run() {
        let episodes = Arc::new(AtomicU64::new(0));
        let b = Bandwidth::new(100_000, episodes.clone());
        let t0 = b.base;
        // 100 kB go through at once (the burst)…
        for _ in 0..10 {
            assert_eq!(b.take_at(Direction::Download, 10_000, t0), None);
        }
        // … the next 10 kB are paid 100 ms ahead: wait that long.
        let pace = b
            .take_at(Direction::Download, 10_000, t0)
            .expect("throttled");
        assert_eq!(
            pace,
            Pace {
                wait: ms(100),
                episode: true
            }
        );
        // Going on at the rate keeps the episode and the pause steady.
        let next = b.take_at(Direction::Download, 10_000, t0 + ms(100));
        assert_eq!(
            next,
            Some(Pace {
                wait: ms(100),
                episode: false
            })
        );
        // The other direction has its own bucket.
        assert_eq!(b.take_at(Direction::Upload, 50_000, t0), None);
        // Idle long enough to refill: no wait; throttled again after the gap: a new episode.
        let later = t0 + ms(200) + EPISODE_GAP + ms(1);
        assert_eq!(b.take_at(Direction::Download, 100_000, later), None);
        let again = b
            .take_at(Direction::Download, 1_000, later)
            .expect("throttled");
        assert!(again.episode && again.wait == ms(10), "{again:?}");
        assert_eq!(episodes.load(Ordering::Relaxed), 2);
        // Over time the bytes let through match the rate: 1 MB in 10 s of paced chunks.
        let b = Bandwidth::new(100_000, Arc::default());
        let mut at = t0;
        for _ in 0..100 {
            if let Some(p) = b.take_at(Direction::Upload, 10_000, at) {
                at += p.wait;
            }
        }
        let spent = at - t0;
        assert!(spent >= ms(8_900) && spent <= ms(9_100), "{spent:?}");
    }

    /// What drawing on the bucket costs per chunk (the atomic update and the clock read).
    /// `cargo test -p warren-registry --release -- --ignored --nocapture bandwidth_cost`
    #[test]
    #[ignore]
    fn bandwidth_cost() {
        let b = Bandwidth::new(u64::MAX / 2, Arc::default());
        let n = 5_000_000u32;
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(b.take(Direction::Download, 16_384));
        }
        let per = started.elapsed().as_nanos() as f64 / f64::from(n);
        println!("bandwidth bucket: {per:.1} ns per chunk");
    }
}

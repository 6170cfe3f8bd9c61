//! The recent requests of one tunnel name: a bounded ring in memory, fed by the edge as each
//! response ends, read by the console (a list) and followed live (Server-Sent Events).
//!
//! Nothing here touches the database: a busy tunnel records thousands of requests a second.
//! The ring sits behind a short std `Mutex` (a push, or a copy for a reader), never held
//! across an await; a tunnel's visitors are served on its one tunnel thread, so the lock is
//! all but uncontended. Live subscribers get a tokio `broadcast` receiver: sending never waits,
//! and a subscriber that falls more than [`SUBSCRIBER_BACKLOG`] entries behind loses the oldest
//! ones (`RecvError::Lagged`), never slowing the edge.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

/// Entries kept per tunnel when the broker's `request_log_entries` is not set.
pub const DEFAULT_REQUEST_LOG_ENTRIES: usize = 1_000;

/// Entries a live subscriber may fall behind before it loses the oldest: a browser tab that
/// reads slower than the tunnel serves.
pub const SUBSCRIBER_BACKLOG: usize = 512;

/// One request as the edge saw it. Made safe to show by the edge: the query string's values
/// are redacted (keys kept) and text is cut to a bounded length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEntry {
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The method (`GET`), as sent.
    pub method: Cow<'static, str>,
    /// The path with the query string's values redacted: `/search?q=…&page=…`.
    pub path: String,
    /// The status sent to the visitor (the origin's, or the edge's own page); 499 (nginx's
    /// convention) when the visitor went away before the response head existed.
    pub status: u16,
    /// From the request's arrival until its response was sent (or the visitor went away);
    /// for an upgraded connection, its whole life.
    pub duration: Duration,
    /// Body bytes from the visitor to the origin (for an upgraded connection, every byte
    /// after the switch). Heads are not counted.
    pub bytes_in: u64,
    /// Body bytes from the origin (or the edge's page) to the visitor, as far as they were
    /// handed to the visitor's connection.
    pub bytes_out: u64,
    /// The visitor's address: the peer's, or, when the peer is a trusted proxy, the one its
    /// forwarded headers name.
    pub visitor: IpAddr,
    /// The `User-Agent`, cut short; empty when there was none.
    pub user_agent: String,
    /// The request's headers as sent, one `name: value` line each, the values of credentials
    /// and cookies replaced by `…`, cut short (the edge's `record::headers`).
    pub headers: String,
    /// Whether the whole response was sent (an upgraded connection: both sides closed
    /// cleanly); `false` when the visitor (or the origin) went away before its end.
    pub complete: bool,
}

impl RequestEntry {
    /// The request's headers, `(name, value)`, read back from [`RequestEntry::headers`]
    /// (one `name: value` line each; header names cannot hold `:` and values cannot hold a
    /// line break, so the split is exact).
    pub fn header_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.lines().filter_map(|l| l.split_once(": "))
    }
}

/// The recent requests of one tunnel name, kept across its owner's reconnects within the
/// grace period and dropped with the name.
pub struct RequestLog {
    owner: i64,
    capacity: usize,
    ring: Mutex<Ring>,
}

struct Ring {
    entries: VecDeque<Arc<RequestEntry>>,
    /// Present while someone subscribes (or did: it is dropped at the next entry once no
    /// receiver is left), so an unwatched tunnel pays nothing for the feature.
    live: Option<broadcast::Sender<Arc<RequestEntry>>>,
}

impl std::fmt::Debug for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLog")
            .field("owner", &self.owner)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl RequestLog {
    /// An empty log of `owner`'s name keeping the last `capacity` entries (at least one).
    /// Memory grows with use: an idle tunnel's log holds no entries.
    pub fn new(owner: i64, capacity: usize) -> Self {
        Self {
            owner,
            capacity: capacity.max(1),
            ring: Mutex::new(Ring {
                entries: VecDeque::new(),
                live: None,
            }),
        }
    }

    /// The user whose tunnel this log records: whoever shows it must check the caller is them
    /// (a log is only ever carried over to the same owner's later routes).
    pub fn owner(&self) -> i64 {
        self.owner
    }

    /// How many entries are kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds `entry`, dropping the oldest past the capacity, and hands it to live subscribers.
    pub fn record(&self, entry: RequestEntry) {
        let entry = Arc::new(entry);
        let mut ring = self.lock();
        if ring.entries.len() == self.capacity {
            ring.entries.pop_front();
        }
        // Sent under the lock, so subscribers see entries in ring order, and a subscriber that
        // took a snapshot with `recent_then_subscribe` gets no entry twice and none missed.
        // `send` never waits: a full channel overwrites its oldest slot.
        if let Some(live) = &ring.live
            && live.send(entry.clone()).is_err()
        {
            // Nobody subscribes any more.
            ring.live = None;
        }
        ring.entries.push_back(entry);
    }

    /// The kept entries, oldest first.
    pub fn recent(&self) -> Vec<Arc<RequestEntry>> {
        self.lock().entries.iter().cloned().collect()
    }

    /// Entries recorded from now on. A receiver that falls more than [`SUBSCRIBER_BACKLOG`]
    /// behind gets `RecvError::Lagged` (and then the newest); `RecvError::Closed` once the
    /// name is gone.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RequestEntry>> {
        self.recent_then_subscribe().1
    }

    /// The kept entries and a receiver of the ones after them, taken at one instant: what a
    /// live view shows first and then appends, with nothing missed or repeated in between.
    pub fn recent_then_subscribe(
        &self,
    ) -> (
        Vec<Arc<RequestEntry>>,
        broadcast::Receiver<Arc<RequestEntry>>,
    ) {
        let mut ring = self.lock();
        let recent = ring.entries.iter().cloned().collect();
        let receiver = match &ring.live {
            Some(live) => live.subscribe(),
            None => {
                let (live, receiver) = broadcast::channel(SUBSCRIBER_BACKLOG);
                ring.live = Some(live);
                receiver
            }
        };
        (recent, receiver)
    }

    /// The kept entries and, with `follow`, a feed of the ones after them (see
    /// [`RequestLog::recent_then_subscribe`]).
    pub fn feed(&self, follow: bool) -> LogFeed {
        if !follow {
            return LogFeed {
                recent: self.recent(),
                live: Live::Ended,
            };
        }
        let (recent, rx) = self.recent_then_subscribe();
        LogFeed {
            recent,
            live: Live::Here(rx),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding it cannot leave the ring half-edited in a way that matters
        // (a push or a pop): carry on.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a follower of a tunnel's log gets after the recent entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// The next entry.
    Entry(Arc<RequestEntry>),
    /// This many entries went by while the follower was behind.
    Lagged(u64),
}

/// A tunnel's recent requests and, when followed, each one after them: read from this node's
/// log ([`RequestLog::feed`]), or from the node of the cluster that holds the tunnel
/// ([`LogFeed::relayed`], `Endpoint::request_log`), which keeps the whole cluster's.
pub struct LogFeed {
    /// The kept entries, oldest first.
    pub recent: Vec<Arc<RequestEntry>>,
    live: Live,
}

enum Live {
    Ended,
    Here(broadcast::Receiver<Arc<RequestEntry>>),
    Elsewhere(mpsc::Receiver<Followed>),
}

impl std::fmt::Debug for LogFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFeed")
            .field("recent", &self.recent.len())
            .finish_non_exhaustive()
    }
}

impl LogFeed {
    /// Entries another node sent: `recent`, then what arrives on `live` (none without).
    pub fn relayed(recent: Vec<Arc<RequestEntry>>, live: Option<mpsc::Receiver<Followed>>) -> Self {
        Self {
            recent,
            live: live.map_or(Live::Ended, Live::Elsewhere),
        }
    }

    /// The next entry after the recent ones (or how many a slow follower missed); `None` once
    /// the log is gone, the holding node stopped sending, or the feed was not followed.
    pub async fn next(&mut self) -> Option<Followed> {
        match &mut self.live {
            Live::Ended => None,
            Live::Here(rx) => match rx.recv().await {
                Ok(e) => Some(Followed::Entry(e)),
                Err(broadcast::error::RecvError::Lagged(n)) => Some(Followed::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => None,
            },
            Live::Elsewhere(rx) => rx.recv().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};

    fn entry(n: u64) -> RequestEntry {
        RequestEntry {
            at_ms: n,
            method: Cow::Borrowed("GET"),
            path: format!("/{n}"),
            status: 200,
            duration: Duration::from_millis(1),
            bytes_in: 0,
            bytes_out: n,
            visitor: IpAddr::from([127, 0, 0, 1]),
            user_agent: String::new(),
            headers: String::new(),
            complete: true,
        }
    }

    fn numbers(entries: &[Arc<RequestEntry>]) -> Vec<u64> {
        entries.iter().map(|e| e.at_ms).collect()
    }

    #[test]
    fn the_ring_keeps_the_last_n() {
        let log = RequestLog::new(1, 3);
        assert!(log.recent().is_empty());
        for n in 1..=2 {
            log.record(entry(n));
        }
        assert_eq!(numbers(&log.recent()), [1, 2]);
        for n in 3..=7 {
            log.record(entry(n));
        }
        assert_eq!(numbers(&log.recent()), [5, 6, 7]);
        // A capacity of 0 would keep nothing and record for nobody: it means "off", which
        // is the registry's business (no log at all), so a log keeps at least one.
        let one = RequestLog::new(1, 0);
        one.record(entry(1));
        one.record(entry(2));
        assert_eq!(numbers(&one.recent()), [2]);
    }

    #[test]
    fn subscribers_get_new_entries_after_the_snapshot() {
        let log = RequestLog::new(1, 10);
        log.record(entry(1));
        let (recent, mut live) = log.recent_then_subscribe();
        assert_eq!(numbers(&recent), [1]);
        let mut other = log.subscribe();
        log.record(entry(2));
        log.record(entry(3));
        for rx in [&mut live, &mut other] {
            assert_eq!(rx.try_recv().map(|e| e.at_ms), Ok(2));
            assert_eq!(rx.try_recv().map(|e| e.at_ms), Ok(3));
            assert_eq!(rx.try_recv().map(|e| e.at_ms), Err(TryRecvError::Empty));
        }
    }

    #[test]
    fn a_subscriber_that_does_not_read_loses_entries_and_slows_nothing() {
        let log = RequestLog::new(1, 10);
        let mut stuck = log.subscribe();
        let total = SUBSCRIBER_BACKLOG as u64 * 4;
        let started = std::time::Instant::now();
        for n in 1..=total {
            log.record(entry(n));
        }
        // Nothing waited on the reader: 2,048 records take microseconds, not a timeout.
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            stuck.try_recv().map(|e| e.at_ms),
            Err(TryRecvError::Lagged(total - SUBSCRIBER_BACKLOG as u64))
        );
        // Then it goes on from the oldest entry still in the channel.
        assert_eq!(
            stuck.try_recv().map(|e| e.at_ms),
            Ok(total - SUBSCRIBER_BACKLOG as u64 + 1)
        );
        assert_eq!(numbers(&log.recent()).len(), 10);
    }

    #[test]
    fn the_feed_is_dropped_when_nobody_subscribes_and_closed_with_the_log() {
        let log = RequestLog::new(1, 10);
        drop(log.subscribe());
        log.record(entry(1));
        assert!(log.lock().live.is_none(), "a feed nobody reads was kept");
        let mut rx = log.subscribe();
        drop(log);
        assert_eq!(
            tokio_test_block_on(rx.recv()).map(|e| e.at_ms),
            Err(RecvError::Closed)
        );
    }

    /// What one record costs, with entries as the edge makes them (a 30-byte path and a
    /// browser's user agent, so three allocations made and, once the ring is full, three
    /// freed): `cargo test --release -p warren-registry record_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn record_cost() {
        let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                  Chrome/120.0.0.0 Safari/537.36";
        for subscribed in [false, true] {
            let log = RequestLog::new(1, DEFAULT_REQUEST_LOG_ENTRIES);
            let _rx = subscribed.then(|| log.subscribe());
            let n = 1_000_000u64;
            let started = std::time::Instant::now();
            for i in 0..n {
                log.record(RequestEntry {
                    at_ms: i,
                    method: Cow::Borrowed("GET"),
                    path: format!("/api/items/{i}?page=…&sort=…"),
                    status: 200,
                    duration: Duration::from_micros(i),
                    bytes_in: 0,
                    bytes_out: 1024,
                    visitor: IpAddr::from([203, 0, 113, 7]),
                    user_agent: ua.to_owned(),
                    headers: String::new(),
                    complete: true,
                });
            }
            let per = started.elapsed().as_nanos() / u128::from(n);
            println!("record, subscribed {subscribed}: {per} ns per entry");
        }
        println!(
            "an entry is {} bytes before its path and user agent",
            std::mem::size_of::<RequestEntry>()
        );
    }

    /// Polls a future that is ready at once (no runtime needed for a closed channel).
    fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(f)
    }
}

//! Failed SSH authentications per IP (IPv6: per /64) in a fixed window, and the penalty for
//! too many: every connection from that address is refused until its window ends, a good key
//! included (OpenSSH's `PerSourcePenalties`).
//!
//! A fixed window rather than a sliding one or a token bucket: the question asked is "has this
//! address failed N times this minute", the answer must be cheap at every SSH accept, and an
//! address that crossed the line should stay out for a stated time it can be told ("try again
//! in 42 s"), not trickle back in one guess at a time as a bucket would let it. The window of an
//! address starts at its first failure, so there is no boundary shared by all addresses at
//! which a scanner could double its rate.
//!
//! Memory is bounded: at most `capacity` addresses are tracked; past it, the address whose
//! window started first is forgotten (it is the nearest to expiring anyway). Each window is
//! also kept in a queue in the order it started, so expiring and evicting are O(1) per entry,
//! never a scan of the map: a flood from many addresses costs one map entry and one queue
//! entry each, and the lock is held for a hash-map update. Nothing is awaited under it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::IpKey;

/// The window failures are counted in.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Failed authentications per address per window, and the addresses now refused.
#[derive(Debug)]
pub struct AuthFailures {
    /// Failures an address may have per window; 0: the limit is off.
    max: u32,
    window: Duration,
    capacity: usize,
    exempt: Vec<IpNet>,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    started: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<IpKey, Entry>,
    /// Every entry's key and window start, oldest first (one per entry in `entries`).
    order: VecDeque<(IpKey, Instant)>,
}

impl State {
    /// Forgets every window that ended by `now` (they are at the front of `order`).
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(key, started)) = self.order.front() {
            if now.saturating_duration_since(started) < window {
                break;
            }
            self.order.pop_front();
            self.entries.remove(&key);
        }
    }
}

impl AuthFailures {
    /// At most `max` failed authentications per address per `window` (`max == 0`: no limit),
    /// tracking at most `capacity` addresses; none of it for sources in `exempt`.
    pub fn new(max: u32, window: Duration, capacity: usize, exempt: Vec<IpNet>) -> Self {
        Self {
            max,
            window,
            capacity: capacity.max(1),
            exempt,
            state: Mutex::default(),
        }
    }

    /// No limit: libraries' defaults and tests.
    pub fn off() -> Self {
        Self::new(0, WINDOW, 1, Vec::new())
    }

    /// The failures an address may have per window (0: off).
    pub fn max(&self) -> u32 {
        self.max
    }

    fn counts(&self, ip: IpAddr) -> bool {
        self.max > 0 && !self.exempt.iter().any(|n| n.contains(&ip.to_canonical()))
    }

    /// Whether `ip` is refused now: `Some(wait)` until its window ends.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        self.blocked_at(ip, Instant::now())
    }

    /// [`AuthFailures::blocked`] at `now`.
    pub fn blocked_at(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if !self.counts(ip) {
            return None;
        }
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let entry = state.entries.get(&IpKey::of(ip))?;
        let left = self
            .window
            .checked_sub(now.saturating_duration_since(entry.started))?;
        (entry.failures >= self.max && !left.is_zero()).then_some(left)
    }

    /// Counts one failed authentication from `ip`; `true` when this one reached the limit
    /// (the address is refused from now on, for the rest of its window).
    pub fn failed(&self, ip: IpAddr) -> bool {
        self.failed_at(ip, Instant::now())
    }

    /// [`AuthFailures::failed`] at `now`.
    pub fn failed_at(&self, ip: IpAddr, now: Instant) -> bool {
        if !self.counts(ip) {
            return false;
        }
        let key = IpKey::of(ip);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.expire(now, self.window);
        if let Some(entry) = state.entries.get_mut(&key) {
            entry.failures = entry.failures.saturating_add(1);
            return entry.failures == self.max;
        }
        if state.entries.len() >= self.capacity
            && let Some((oldest, _)) = state.order.pop_front()
        {
            state.entries.remove(&oldest);
        }
        state.entries.insert(
            key,
            Entry {
                started: now,
                failures: 1,
            },
        );
        state.order.push_back((key, now));
        self.max == 1
    }

    /// Addresses with a window running (until the next failure expires the ended ones).
    pub fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        [192, 0, 2, last].into()
    }

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap_or(ip(0))
    }

    #[test]
    fn an_address_past_the_limit_is_refused_until_its_window_ends() {
        let t0 = Instant::now();
        let f = AuthFailures::new(3, WINDOW, 100, Vec::new());
        assert_eq!(f.blocked_at(ip(1), t0), None);
        assert!(!f.failed_at(ip(1), t0));
        assert!(!f.failed_at(ip(1), t0 + Duration::from_secs(10)));
        assert_eq!(f.blocked_at(ip(1), t0 + Duration::from_secs(10)), None);
        assert!(
            f.failed_at(ip(1), t0 + Duration::from_secs(20)),
            "the third reaches the limit"
        );
        assert_eq!(
            f.blocked_at(ip(1), t0 + Duration::from_secs(20)),
            Some(Duration::from_secs(40)),
            "refused for the rest of the window that began at the first failure"
        );
        assert!(
            !f.failed_at(ip(1), t0 + Duration::from_secs(21)),
            "said once"
        );
        assert_eq!(f.blocked_at(ip(2), t0 + Duration::from_secs(20)), None);
        assert_eq!(f.blocked_at(ip(1), t0 + Duration::from_secs(60)), None);
        // A new window: the count starts again.
        assert!(!f.failed_at(ip(1), t0 + Duration::from_secs(61)));
        assert_eq!(f.blocked_at(ip(1), t0 + Duration::from_secs(62)), None);
        assert_eq!(f.tracked(), 1);
    }

    #[test]
    fn ipv6_counts_by_64_and_exempt_or_off_count_nothing() {
        let t0 = Instant::now();
        let f = AuthFailures::new(
            2,
            WINDOW,
            100,
            vec![IpNet::from(ip(200)), IpNet::from(v6("::1"))],
        );
        f.failed_at(v6("2001:db8::1"), t0);
        f.failed_at(v6("2001:db8::2"), t0);
        assert!(f.blocked_at(v6("2001:db8::ffff"), t0).is_some(), "one /64");
        assert!(f.blocked_at(v6("2001:db8:0:1::1"), t0).is_none());
        for _ in 0..10 {
            assert!(!f.failed_at(ip(200), t0));
            assert!(!f.failed_at(v6("::ffff:192.0.2.200"), t0));
        }
        assert_eq!(f.blocked_at(ip(200), t0), None, "exempt");
        let off = AuthFailures::off();
        for _ in 0..100 {
            assert!(!off.failed_at(ip(1), t0));
        }
        assert_eq!((off.blocked_at(ip(1), t0), off.tracked()), (None, 0));
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_window_goes_first() {
        let t0 = Instant::now();
        let f = AuthFailures::new(1, WINDOW, 3, Vec::new());
        for i in 1..=3u8 {
            f.failed_at(ip(i), t0 + Duration::from_secs(u64::from(i)));
        }
        assert!(f.blocked_at(ip(1), t0 + Duration::from_secs(5)).is_some());
        f.failed_at(ip(4), t0 + Duration::from_secs(5));
        assert_eq!(f.tracked(), 3);
        assert_eq!(
            f.blocked_at(ip(1), t0 + Duration::from_secs(5)),
            None,
            "the oldest was dropped"
        );
        for i in 2..=4 {
            assert!(f.blocked_at(ip(i), t0 + Duration::from_secs(5)).is_some());
        }
        // Ended windows are dropped by the next failure, whatever the cap.
        f.failed_at(ip(9), t0 + Duration::from_secs(120));
        assert_eq!(f.tracked(), 1);
        // A flood of addresses never holds more than the cap.
        let big = AuthFailures::new(5, WINDOW, 1000, Vec::new());
        for i in 0..100_000u32 {
            big.failed_at(IpAddr::from(i.to_be_bytes()), t0);
        }
        let state = big.state.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!((state.entries.len(), state.order.len()), (1000, 1000));
    }

    /// What the check at every SSH accept costs, and a failure, over 50,000 addresses.
    /// `cargo test -p warren-admit --release -- --ignored --nocapture auth_failure_cost`
    #[test]
    #[ignore]
    fn auth_failure_cost() {
        let f = AuthFailures::new(30, WINDOW, 65_536, Vec::new());
        let n = 2_000_000u32;
        let addr = |i: u32| IpAddr::from((i % 50_000).wrapping_mul(2_654_435_761).to_be_bytes());
        let started = Instant::now();
        for i in 0..n {
            f.failed(addr(i));
        }
        let failed = started.elapsed().as_nanos() as f64 / f64::from(n);
        let started = Instant::now();
        for i in 0..n {
            std::hint::black_box(f.blocked(addr(i)));
        }
        let check = started.elapsed().as_nanos() as f64 / f64::from(n);
        println!("auth failures: {check:.0} ns per accept check, {failed:.0} ns per failure");
    }
}

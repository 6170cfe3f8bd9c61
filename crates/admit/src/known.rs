//! Sources that logged in before: the addresses (IPv6: /64s) of owners, which may take the
//! places of the pending cap kept back from strangers.
//!
//! Under a flood of unauthenticated connections from many addresses, every pending place is
//! a stranger's, and the owner who reconnects competes with thousands of them for each place
//! that frees: measured with 10,000 connections from 40 addresses, an owner from an address
//! that had logged in minutes before could not log in within the test's 20 s deadline. A
//! quarter of the places is kept for addresses that logged in within the last week, the way a
//! firewall keeps a "known good" set; a stranger cannot join it without a key. A new owner's
//! address is a stranger's until its first login and competes for the rest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::IpKey;

/// Addresses that logged in, each until `ttl` after its last login, at most `capacity` of
/// them (a full set keeps the ones it has: a stranger cannot push owners out, as none can log
/// in). One short lock per SSH accept and per login, never across an await.
#[derive(Debug)]
pub struct Known {
    capacity: usize,
    ttl: Duration,
    seen: Mutex<HashMap<IpKey, Instant>>,
}

impl Known {
    /// At most `capacity` addresses, each for `ttl` after its last login.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity,
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `ip` logged in now.
    pub fn vouch(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = IpKey::of(ip);
        if seen.len() >= self.capacity && !seen.contains_key(&key) {
            let ttl = self.ttl;
            seen.retain(|_, at| now.duration_since(*at) < ttl);
            if seen.len() >= self.capacity {
                return;
            }
        }
        seen.insert(key, now);
    }

    /// Whether `ip` logged in within the last `ttl`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&IpKey::of(ip))
            .is_some_and(|at| at.elapsed() < self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        [192, 0, 2, last].into()
    }

    #[test]
    fn a_full_set_keeps_its_owners_and_expired_ones_make_room() {
        let k = Known::new(2, Duration::from_secs(3600));
        assert!(!k.contains(ip(1)));
        k.vouch(ip(1));
        k.vouch(ip(2));
        k.vouch(ip(3));
        assert!(k.contains(ip(1)) && k.contains(ip(2)));
        assert!(!k.contains(ip(3)), "full: the newcomer waits");
        let short = Known::new(1, Duration::ZERO);
        short.vouch(ip(1));
        assert!(!short.contains(ip(1)), "expired at once");
        short.vouch(ip(2));
        assert!(short.seen.lock().map(|s| s.len()).unwrap_or(0) == 1);
        let v6 = Known::new(4, Duration::from_secs(3600));
        v6.vouch("2001:db8::1".parse().unwrap_or(ip(0)));
        assert!(
            v6.contains("2001:db8::ffff".parse().unwrap_or(ip(0))),
            "one /64"
        );
    }
}

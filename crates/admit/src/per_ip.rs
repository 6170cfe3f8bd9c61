//! Connections held per IP: a sharded map of counters, and a slot that gives its count back
//! when dropped.
//!
//! Each accept takes one shard's lock for a hash-map update and lets go at once; nothing is
//! ever awaited under it. 64 shards keep two threads (the accept loop and a tunnel thread
//! dropping a slot) off each other's lock almost always, and the map holds only IPs with a
//! connection open now, so a flood from many addresses costs memory only while it is held.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::IpKey;

const SHARDS: usize = 64;

/// How many connections each IP (or IPv6 /64) holds now, and the most it may.
#[derive(Debug)]
pub struct PerIp {
    max: u32,
    shards: Box<[Mutex<HashMap<IpKey, u32>>]>,
}

impl PerIp {
    /// A table allowing `max` connections per IP (`max == 0`: none at all).
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self {
            max,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    /// The most connections one IP may hold.
    pub fn max(&self) -> u32 {
        self.max
    }

    fn shard(&self, key: IpKey) -> MutexGuard<'_, HashMap<IpKey, u32>> {
        let i = (key.spread() >> 58) as usize % self.shards.len();
        #[allow(clippy::indexing_slicing)] // i < len
        let shard = &self.shards[i];
        // A panic elsewhere while holding it left a counter map, still consistent.
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more connection for `ip`, or `None` when it already holds `max`.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = IpKey::of(ip);
        let mut shard = self.shard(key);
        let held = shard.entry(key).or_insert(0);
        if *held >= self.max {
            if *held == 0 {
                shard.remove(&key);
            }
            return None;
        }
        *held += 1;
        drop(shard);
        Some(IpSlot {
            table: self.clone(),
            key,
        })
    }

    /// Connections `ip` holds now.
    pub fn held(&self, ip: IpAddr) -> u32 {
        let key = IpKey::of(ip);
        self.shard(key).get(&key).copied().unwrap_or(0)
    }

    /// IPs holding at least one connection now.
    pub fn ips(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    fn give_back(&self, key: IpKey) {
        let mut shard = self.shard(key);
        if let Some(held) = shard.get_mut(&key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                shard.remove(&key);
            }
        }
    }
}

/// One connection counted against its IP until dropped.
#[derive(Debug)]
pub struct IpSlot {
    table: Arc<PerIp>,
    key: IpKey,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.table.give_back(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_ip_and_forgets_ips_with_nothing_open() {
        let t = PerIp::new(2);
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let one = t.try_take(a).expect("first");
        let two = t.try_take(a).expect("second");
        assert!(t.try_take(a).is_none(), "third from the same IP");
        let other = t.try_take(b).expect("another IP is not affected");
        assert_eq!((t.held(a), t.held(b), t.ips()), (2, 1, 2));
        drop(one);
        let three = t.try_take(a).expect("a slot came back");
        drop((two, three, other));
        assert_eq!((t.held(a), t.ips()), (0, 0), "no entry left behind");
        let none = PerIp::new(0);
        assert!(none.try_take(a).is_none());
        assert_eq!(none.ips(), 0);
    }

    /// What counting costs per connection: one take and one give-back, uncontended.
    /// `cargo test -p warren-admit --release -- --ignored --nocapture accounting_cost`
    #[test]
    #[ignore]
    fn accounting_cost() {
        let t = PerIp::new(u32::MAX);
        let n = 2_000_000u32;
        // Many distinct IPs, as under a flood, and a few held open so the map is not empty.
        let _held: Vec<_> = (0..10_000u32)
            .filter_map(|i| t.try_take(IpAddr::from(i.to_be_bytes())))
            .collect();
        let started = std::time::Instant::now();
        for i in 0..n {
            let ip = IpAddr::from((i % 50_000).wrapping_mul(2_654_435_761).to_be_bytes());
            drop(t.try_take(ip));
        }
        let per = started.elapsed().as_nanos() as f64 / f64::from(n);
        println!("per-IP accounting: {per:.0} ns per accept + release");
    }
}

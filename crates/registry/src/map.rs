//! The route map under the table: name → entry, read lock-free by every visitor, written by
//! binds and unbinds without copying the whole map.
//!
//! One `arc-swap`ped map copied on every write cost a bind a copy of all 10,000 routes
//! (2.5–3.9 ms, and 16% of the broker's CPU in a reconnect storm of 10,000 owners). The names
//! are spread over [`SHARDS`] maps by a hash of the name, each still `arc-swap`ped and copied on
//! write, so a write copies 1/256 of the map; a lookup is a hash to pick the shard, an atomic
//! load and a probe. Writers are serialised by one mutex, which also guards an exact index of
//! each owner's names: the per-owner limits and `drop_owner` read it instead of scanning.
//!
//! A write that touches several names (dropping an owner, a sweep) is published shard by
//! shard: a visitor may see some of an owner's names gone before the others. Nothing needs
//! more; single-name writes are published whole, as before.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::table::Entry;

/// How many maps the names are spread over: at 10,000 routes a write copies ~40 entries.
pub(crate) const SHARDS: usize = 256;

type Shard = HashMap<String, Entry>;

/// Names by owner, live or parked: exactly the names whose entry in the map is that owner's.
type Owners = HashMap<i64, HashSet<String>>;

/// The sharded map. Reads take no lock; writes go through [`RouteMap::write`].
pub(crate) struct RouteMap {
    shards: Box<[ArcSwap<Shard>]>,
    /// Mixed into the shard hash so the spread differs from process to process.
    seed: u64,
    /// Serialises writers, and is the owner index they keep. Held only for map surgery, never
    /// across an await.
    owners: Mutex<Owners>,
}

impl RouteMap {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| ArcSwap::default()).collect(),
            seed: rand::random(),
            owners: Mutex::default(),
        }
    }

    /// FNV-1a of the name, seeded: a handful of cycles for a tunnel name, where SipHash would
    /// double the cost of a lookup (the shard map hashes the name again with its own keyed
    /// hasher). A tenant who made its names collide would only make its own shard's copies
    /// longer, and its names are capped (`max_forwards_per_user`).
    fn shard(&self, name: &str) -> &ArcSwap<Shard> {
        let mut h = 0xcbf2_9ce4_8422_2325 ^ self.seed;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[((h >> 32) ^ h) as usize % SHARDS]
    }

    /// Runs `f` on `name`'s entry as visitors see it now. Lock-free.
    pub(crate) fn with<T>(&self, name: &str, f: impl FnOnce(Option<&Entry>) -> T) -> T {
        f(self.shard(name).load().get(name))
    }

    /// Calls `f` on every entry (a snapshot per shard).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&str, &Entry)) {
        for shard in self.shards.iter() {
            for (name, entry) in shard.load().iter() {
                f(name, entry);
            }
        }
    }

    /// The live routes (a snapshot per shard).
    pub(crate) fn live(&self) -> Vec<Arc<crate::Route>> {
        let mut live = Vec::new();
        self.for_each(|_, e| {
            if let Entry::Live(r) = e {
                live.push(r.clone());
            }
        });
        live
    }

    /// Entries in the map, live and parked (expired ones until a sweep).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.load().len()).sum()
    }

    /// The one writer: holds the writers' lock until dropped.
    pub(crate) fn write(&self) -> Writer<'_> {
        // A poisoned lock only means another writer panicked between two steps; each step
        // leaves the index and the shards agreeing, so carry on.
        Writer {
            map: self,
            owners: self.owners.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

/// Exclusive write access to a [`RouteMap`], and read access to its owner index.
pub(crate) struct Writer<'a> {
    map: &'a RouteMap,
    owners: MutexGuard<'a, Owners>,
}

impl Writer<'_> {
    /// `name`'s entry (the writer's view is the published one: nobody else writes).
    pub(crate) fn get(&self, name: &str) -> Option<Entry> {
        self.map.shard(name).load().get(name).cloned()
    }

    /// Calls `f` on each of `owner`'s entries, live or parked.
    pub(crate) fn for_owner(&self, owner: i64, mut f: impl FnMut(&str, &Entry)) {
        for name in self.owners.get(&owner).into_iter().flatten() {
            if let Some(entry) = self.map.shard(name).load().get(name) {
                f(name, entry);
            }
        }
    }

    /// Every name `owner` has an entry for, live or parked.
    pub(crate) fn names_of(&self, owner: i64) -> Vec<String> {
        self.owners
            .get(&owner)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Sets `name`'s entry, copying its shard; returns the entry it replaced.
    pub(crate) fn insert(&mut self, name: &str, entry: Entry) -> Option<Entry> {
        let owner = entry.owner();
        let shard = self.map.shard(name);
        let mut copy = Shard::clone(&shard.load());
        let old = copy.insert(name.to_owned(), entry);
        shard.store(Arc::new(copy));
        if let Some(previous) = old.as_ref().map(Entry::owner).filter(|o| *o != owner) {
            self.unindex(previous, name);
        }
        self.owners
            .entry(owner)
            .or_default()
            .insert(name.to_owned());
        old
    }

    /// Removes `name`'s entry, copying its shard.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Entry> {
        let shard = self.map.shard(name);
        if !shard.load().contains_key(name) {
            return None;
        }
        let mut copy = Shard::clone(&shard.load());
        let old = copy.remove(name);
        shard.store(Arc::new(copy));
        if let Some(entry) = &old {
            self.unindex(entry.owner(), name);
        }
        old
    }

    /// Drops the entries `drop` picks, copying only the shards that hold one.
    pub(crate) fn remove_where(&mut self, drop: impl Fn(&str, &Entry) -> bool) {
        for shard in self.map.shards.iter() {
            let current = shard.load_full();
            let gone: Vec<(String, i64)> = current
                .iter()
                .filter(|(name, entry)| drop(name, entry))
                .map(|(name, entry)| (name.clone(), entry.owner()))
                .collect();
            if gone.is_empty() {
                continue;
            }
            let mut copy = Shard::clone(&current);
            for (name, owner) in &gone {
                copy.remove(name);
                self.unindex(*owner, name);
            }
            shard.store(Arc::new(copy));
        }
    }

    fn unindex(&mut self, owner: i64, name: &str) {
        if let Some(names) = self.owners.get_mut(&owner) {
            names.remove(name);
            if names.is_empty() {
                self.owners.remove(&owner);
            }
        }
    }

    /// Whether the owner index says exactly what the shards hold (tests).
    #[cfg(test)]
    pub(crate) fn index_is_exact(&self) -> bool {
        let mut rebuilt = Owners::new();
        self.map.for_each(|name, entry| {
            rebuilt
                .entry(entry.owner())
                .or_default()
                .insert(name.to_owned());
        });
        rebuilt == *self.owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_spread_over_the_shards() {
        let map = RouteMap::new();
        let mut sizes: HashMap<*const ArcSwap<Shard>, usize> = HashMap::new();
        for i in 0..10_000 {
            *sizes
                .entry(std::ptr::from_ref(map.shard(&format!("brave-otter-{i}"))))
                .or_default() += 1;
        }
        // ~39 a shard on average: none empty, none more than twice that.
        assert_eq!(sizes.len(), SHARDS);
        let largest = sizes.values().max().copied().unwrap_or_default();
        assert!(largest < 80, "a shard of {largest}");
    }
}

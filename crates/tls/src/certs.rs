//! The certificates being served, by host name.
//!
//! Reads happen on every TLS handshake, writes when a certificate is issued or renewed (rarely),
//! so the maps live behind an `arc-swap` snapshot: a lookup is an atomic load and a hash probe,
//! a write copies the maps. A connection holds the `Arc<CertifiedKey>` it was handshaken with, so
//! swapping in a renewed certificate never disturbs it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

use crate::normalize;

#[derive(Debug, Default, Clone)]
struct Maps {
    /// `chat.example.com` → key.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `example.com` → the key for `*.example.com`, keyed by zone so a lookup needs no
    /// allocation.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

/// A lock-free map of certificates by exact lowercase host name (`chat.example.com`) and by
/// wildcard (`*.example.com`, which serves exactly one label under `example.com`, as browsers
/// match it). Exact names win over wildcards.
#[derive(Debug, Default)]
pub struct CertStore {
    maps: ArcSwap<Maps>,
}

impl CertStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `key` for `name` (`chat.example.com` or `*.example.com`), replacing what was there.
    /// Handshakes already done keep the key they got.
    pub fn insert(&self, name: &str, key: Arc<CertifiedKey>) {
        let name = normalize(name);
        self.maps.rcu(|maps| {
            let mut maps = Maps::clone(maps);
            match name.strip_prefix("*.") {
                Some(zone) => maps.wildcard.insert(zone.to_owned(), key.clone()),
                None => maps.exact.insert(name.clone(), key.clone()),
            };
            maps
        });
    }

    /// Stops serving `name`; returns the key it had.
    pub fn remove(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = normalize(name);
        let mut removed = None;
        self.maps.rcu(|maps| {
            let mut maps = Maps::clone(maps);
            removed = match name.strip_prefix("*.") {
                Some(zone) => maps.wildcard.remove(zone),
                None => maps.exact.remove(&name),
            };
            maps
        });
        removed
    }

    /// The key to serve for a TLS SNI: the exact name first, then the wildcard for its parent
    /// zone (`a.example.com` → `*.example.com`; `a.b.example.com` is not covered by it).
    pub fn get(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let maps = self.maps.load();
        let owned;
        let mut sni = sni.strip_suffix('.').unwrap_or(sni);
        if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            owned = sni.to_ascii_lowercase();
            sni = &owned;
        }
        if let Some(key) = maps.exact.get(sni) {
            return Some(key.clone());
        }
        let (label, zone) = sni.split_once('.')?;
        if label.is_empty() || zone.is_empty() {
            return None;
        }
        maps.wildcard.get(zone).cloned()
    }

    /// The key stored under exactly `name` (no wildcard matching): what the ACME manager checks
    /// to know whether `name` has its own certificate installed.
    pub fn get_exact(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = normalize(name);
        let maps = self.maps.load();
        match name.strip_prefix("*.") {
            Some(zone) => maps.wildcard.get(zone).cloned(),
            None => maps.exact.get(&name).cloned(),
        }
    }

    /// Every name served, sorted, wildcards as `*.zone`.
    pub fn names(&self) -> Vec<String> {
        let maps = self.maps.load();
        let mut names: Vec<String> = maps
            .exact
            .keys()
            .cloned()
            .chain(maps.wildcard.keys().map(|z| format!("*.{z}")))
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Challenges;

    /// A throwaway key: a TLS-ALPN-01 certificate is a cheap self-signed one.
    fn key(name: &str) -> Arc<CertifiedKey> {
        let c = Challenges::new();
        c.add_tls_alpn01(name, &[0; 32]).expect("generate");
        c.tls_alpn01(name).expect("stored")
    }

    #[test]
    fn exact_wins_over_wildcard_and_wildcard_covers_one_label() {
        let store = CertStore::new();
        let (exact, wild) = (key("chat.example.com"), key("*.example.com"));
        store.insert("Chat.Example.com.", exact.clone());
        store.insert("*.example.com", wild.clone());
        let got = |sni: &str| store.get(sni);
        assert!(Arc::ptr_eq(
            &got("chat.example.com").expect("exact"),
            &exact
        ));
        assert!(Arc::ptr_eq(&got("CHAT.example.com").expect("case"), &exact));
        assert!(Arc::ptr_eq(&got("other.example.com").expect("wild"), &wild));
        assert!(got("a.b.example.com").is_none(), "one label only");
        assert!(got("example.com").is_none(), "not the apex");
        assert!(got(".example.com").is_none());
        assert_eq!(store.names(), ["*.example.com", "chat.example.com"]);
        assert!(store.get_exact("*.example.com").is_some());
        assert!(store.get_exact("other.example.com").is_none());
    }

    #[test]
    fn replace_and_remove() {
        let store = CertStore::new();
        let (old, new) = (key("a.example.com"), key("a.example.com"));
        store.insert("a.example.com", old.clone());
        let held = store.get("a.example.com").expect("old");
        store.insert("a.example.com", new.clone());
        assert!(Arc::ptr_eq(&store.get("a.example.com").expect("new"), &new));
        assert!(Arc::ptr_eq(&held, &old), "a holder keeps what it got");
        assert!(store.remove("a.example.com").is_some());
        assert!(store.remove("a.example.com").is_none());
        assert!(store.get("a.example.com").is_none());
        assert!(store.names().is_empty());
    }
}

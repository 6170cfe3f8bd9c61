//! Who may visit a name: the access policy the edge checks on every request or connection.
//!
//! Policies are data built from the store's rules (IP allow/deny networks, basic-auth users
//! and their hashes, the share links still honoured) and kept in a lock-free map beside the
//! routes, replaced whole when the store says a name's rules changed. Each policy carries its
//! own cache of checked credentials: replacing the policy (any change: a user removed, a
//! password changed) drops the cache with it, so a stale "yes" can never outlive the rule that
//! gave it.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;

use arc_swap::ArcSwap;
use ipnet::IpNet;

/// Where a share link's token sits in its URL (`/.well-known/warren-share/TOKEN`): a path
/// under `.well-known` (RFC 8615) that the edge answers itself on every HTTP tunnel, so an
/// origin never sees a token.
pub const SHARE_PATH: &str = "/.well-known/warren-share/";

/// Whether `token` has the shape of a share link's token (256 bits, 43 base64url characters):
/// anything else is refused before it costs a database query.
pub fn is_share_token(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What an IP entry does to the addresses it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpAction {
    /// Let in (and, once any allow entry exists, only these).
    Allow,
    /// Keep out.
    Deny,
}

/// A basic-auth user as the edge checks it. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name the visitor types.
    pub user: String,
    /// An argon2 PHC string or a bcrypt hash.
    pub hash: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// How many checked credentials a policy remembers, each way. A flood of wrong passwords
/// only ever empties the "wrong" set; the right ones stay cached.
const CACHE_MAX: usize = 1024;

/// Tags of `Authorization` values already checked against a policy: a hit costs two short
/// keyed hashes and a set lookup instead of an argon2 or bcrypt verification. Reads are
/// lock-free; inserts (one per verification, so at most as many per second as the CPU can
/// verify) copy the set.
///
/// A tag is 128 bits from two SipHash instances keyed at random per cache, so nobody outside
/// the process can compute one: a stranger can only guess blindly at a value whose tag is
/// cached good (1,024 of 2^128). It replaced a SHA-256 digest of the header, the largest
/// part of a cached check: basic auth's cost per request went from ×1.036 to ×1.015 of an
/// open tunnel's instructions (`bench/cost`, docs/ARCHITECTURE.md).
#[derive(Debug, Default)]
pub struct CredentialCache {
    keys: [RandomState; 2],
    good: ArcSwap<HashSet<u128>>,
    bad: ArcSwap<HashSet<u128>>,
}

impl CredentialCache {
    /// The tag of one `Authorization` value (see the type's doc).
    pub fn tag(&self, value: &[u8]) -> u128 {
        (u128::from(self.keys[0].hash_one(value)) << 64) | u128::from(self.keys[1].hash_one(value))
    }

    /// `Some(true)` for a tag known good, `Some(false)` for one known wrong.
    pub fn get(&self, tag: u128) -> Option<bool> {
        if self.good.load().contains(&tag) {
            Some(true)
        } else if self.bad.load().contains(&tag) {
            Some(false)
        } else {
            None
        }
    }

    /// Remembers the outcome of one verification.
    pub fn put(&self, tag: u128, ok: bool) {
        let set = if ok { &self.good } else { &self.bad };
        set.rcu(|s| {
            let mut s = if s.len() >= CACHE_MAX {
                HashSet::new()
            } else {
                HashSet::clone(s)
            };
            s.insert(tag);
            s
        });
    }
}

/// The access rules of one name, as the edge applies them.
#[derive(Debug, Default)]
pub struct AccessPolicy {
    /// The reservation holder: the policy applies to their tunnels only.
    pub owner: i64,
    /// IP entries, longest prefix first (the most specific entry decides).
    nets: Vec<(IpNet, IpAction)>,
    /// Whether any entry allows: then an address no entry covers is kept out.
    allow_listed: bool,
    /// Basic-auth users; none means no password is asked.
    users: Vec<Credential>,
    /// Share links whose cookies are honoured: id → expiry (Unix seconds).
    shares: HashMap<i64, i64>,
    /// The newest share link id the store had when this policy was built, live or not.
    newest_share: i64,
    /// Checked `Authorization` values.
    cache: CredentialCache,
}

impl AccessPolicy {
    /// An empty policy for a name held by `owner` (everyone is let in).
    pub fn new(owner: i64) -> Self {
        Self {
            owner,
            ..Self::default()
        }
    }

    /// Adds an IP entry.
    pub fn with_net(mut self, net: IpNet, action: IpAction) -> Self {
        self.allow_listed |= action == IpAction::Allow;
        self.nets.push((net.trunc(), action));
        // Longest prefix first; at equal length deny first, so a tie keeps the visitor out.
        self.nets
            .sort_by_key(|(n, a)| (std::cmp::Reverse(n.prefix_len()), *a != IpAction::Deny));
        self
    }

    /// Adds a basic-auth user.
    pub fn with_user(mut self, user: impl Into<String>, hash: impl Into<String>) -> Self {
        self.users.push(Credential {
            user: user.into(),
            hash: hash.into(),
        });
        self
    }

    /// Records a share link: `live` ones (not revoked, not expired) are honoured until
    /// `expires_at`; every one counts toward the newest id known.
    pub fn with_share(mut self, id: i64, expires_at: i64, live: bool) -> Self {
        self.newest_share = self.newest_share.max(id);
        if live {
            self.shares.insert(id, expires_at);
        }
        self
    }

    /// Whether the policy lets anyone in without conditions.
    pub fn is_open(&self) -> bool {
        self.nets.is_empty() && self.users.is_empty()
    }

    /// Whether a visitor from `ip` may come in: the longest-prefix entry covering it decides
    /// (deny wins a tie); with no entry covering it, it may unless an allow list exists.
    /// IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self.nets.iter().find(|(n, _)| n.contains(&ip)) {
            Some((_, action)) => *action == IpAction::Allow,
            None => !self.allow_listed,
        }
    }

    /// Whether visitors must show a credential (a password or a share cookie): HTTP only.
    pub fn wants_credentials(&self) -> bool {
        !self.users.is_empty()
    }

    /// The basic-auth user named `user`.
    pub fn user(&self, user: &str) -> Option<&Credential> {
        self.users.iter().find(|c| c.user == user)
    }

    /// Whether a cookie of share link `id` is honoured at `now`: the link is live, or newer
    /// than anything this policy knows of (created after it was built, so it cannot have been
    /// revoked yet: the cookie's signature and expiry are what count until the next refresh).
    pub fn honours_share(&self, id: i64, now: i64) -> bool {
        match self.shares.get(&id) {
            Some(expires_at) => *expires_at > now,
            None => id > self.newest_share,
        }
    }

    /// The credentials already checked against this policy.
    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_most_specific_entry_decides() {
        let p = AccessPolicy::new(1)
            .with_net(net("10.0.0.0/8"), IpAction::Allow)
            .with_net(net("10.0.0.5/32"), IpAction::Deny)
            .with_net(net("2001:db8::/32"), IpAction::Allow);
        assert!(p.admits(ip("10.1.2.3")));
        assert!(!p.admits(ip("10.0.0.5")));
        assert!(!p.admits(ip("192.0.2.1")), "an allow list keeps others out");
        assert!(p.admits(ip("2001:db8::1")));
        assert!(p.admits(ip("::ffff:10.9.9.9")), "v4-mapped is v4");
        assert!(!p.admits(ip("::ffff:10.0.0.5")));

        let deny_only = AccessPolicy::new(1).with_net(net("203.0.113.0/24"), IpAction::Deny);
        assert!(!deny_only.admits(ip("203.0.113.9")));
        assert!(deny_only.admits(ip("198.51.100.1")));
        let tie = AccessPolicy::new(1)
            .with_net(net("192.0.2.0/24"), IpAction::Allow)
            .with_net(net("192.0.2.0/24"), IpAction::Deny);
        assert!(!tie.admits(ip("192.0.2.1")));
        let carve = AccessPolicy::new(1)
            .with_net(net("0.0.0.0/0"), IpAction::Deny)
            .with_net(net("198.51.100.7/32"), IpAction::Allow);
        assert!(carve.admits(ip("198.51.100.7")));
        assert!(!carve.admits(ip("198.51.100.8")));
        assert!(AccessPolicy::new(1).admits(ip("192.0.2.1")));
    }

    #[test]
    fn share_cookies_follow_the_links() {
        let p = AccessPolicy::new(1)
            .with_share(3, 1000, true)
            .with_share(4, 1000, false)
            .with_share(2, 500, true);
        assert!(p.honours_share(3, 999));
        assert!(!p.honours_share(3, 1000), "expired");
        assert!(!p.honours_share(4, 10), "revoked");
        assert!(
            !p.honours_share(1, 10),
            "older than the snapshot and not live"
        );
        assert!(p.honours_share(5, 10), "newer than the snapshot");
    }

    #[test]
    fn the_cache_keeps_good_ones_through_a_flood_of_bad_ones() {
        let c = CredentialCache::default();
        let good = c.tag(b"Basic YWxpY2U6cGFzc3dvcmQ=");
        c.put(good, true);
        for i in 0..(CACHE_MAX as u32 + 10) {
            c.put(c.tag(format!("Basic wrong{i}").as_bytes()), false);
        }
        assert_eq!(c.get(good), Some(true));
        assert_eq!(c.get(c.tag(b"Basic wrong3")), None, "emptied once full");
        assert!(c.bad.load().len() <= CACHE_MAX);
        assert_eq!(c.get(c.tag(b"Basic other")), None);
    }

    #[test]
    fn tags_are_keyed_per_cache() {
        let (a, b) = (CredentialCache::default(), CredentialCache::default());
        let v = b"Basic YWxpY2U6cGFzc3dvcmQ=";
        assert_eq!(a.tag(v), a.tag(v));
        assert_ne!(a.tag(v), b.tag(v), "another cache's keys give another tag");
        assert_ne!(a.tag(v), a.tag(b"Basic YWxpY2U6cGFzc3dvcmE="));
    }
}

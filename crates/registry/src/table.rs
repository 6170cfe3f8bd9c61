//! The table itself: live routes, parked names and sticky random names.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::access::AccessPolicy;
use crate::map::{RouteMap, Writer};
use crate::requests::{DEFAULT_REQUEST_LOG_ENTRIES, RequestEntry, RequestLog};
use crate::{Bandwidth, Endpoint};

/// Identifies one SSH connection; a name bound by it is released when it ends.
pub type SessionId = u64;

/// What a live name carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// HTTP: the edge parses requests (and terminates TLS) and speaks HTTP/1.1 to the owner.
    Http,
    /// TLS passthrough: the edge routes by SNI and relays the encrypted bytes untouched; the
    /// owner's service holds its own certificate.
    TlsPassthrough,
    /// Raw TCP on a public port; the route's name is [`tcp_name`]`(port)`.
    Tcp,
}

impl RouteKind {
    /// The word reservations, the API and the CLI use for this kind: `http`, `tls`, `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Http => "http",
            RouteKind::TlsPassthrough => "tls",
            RouteKind::Tcp => "tcp",
        }
    }

    /// The kind a reservation's kind word names (`http` for anything else, as the store's
    /// column default).
    pub fn from_word(word: &str) -> Self {
        match word {
            "tls" => RouteKind::TlsPassthrough,
            "tcp" => RouteKind::Tcp,
            _ => RouteKind::Http,
        }
    }
}

/// The registry name of the raw TCP tunnel on `port` (TCP routes share the table with names;
/// the colon keeps them apart from any DNS label).
pub fn tcp_name(port: u16) -> String {
    format!("tcp:{port}")
}

/// The port of a [`tcp_name`], `None` for any other name: the only decoder of that encoding.
pub fn tcp_port(name: &str) -> Option<u16> {
    name.strip_prefix("tcp:")?.parse().ok()
}

/// What one tenant may hold in the table at once, so that no tenant can starve the others of
/// names, ports or the broker's memory. Checked inside [`Registry::bind`], under the write
/// lock, so two sessions of one user cannot both slip under a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerLimits {
    /// Live routes per owner, of every kind.
    pub routes: usize,
    /// Public TCP ports per owner, live or parked: a parked port stays unusable by anyone else
    /// for the grace period, so it counts.
    pub tcp_ports: usize,
}

impl OwnerLimits {
    /// No limits (tests, and tables built without a configuration).
    pub const NONE: Self = Self {
        routes: usize::MAX,
        tcp_ports: usize::MAX,
    };
}

/// What one owner holds in the table right now ([`Registry::held_by`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Live routes.
    pub routes: usize,
    /// TCP ports, live or parked.
    pub tcp_ports: usize,
}

/// One live name.
pub struct Route {
    /// The label (`chat`), or [`tcp_name`] for a raw TCP tunnel.
    pub name: String,
    /// Owner's user id.
    pub owner: i64,
    /// The SSH connection serving it.
    pub session: SessionId,
    /// HTTP, TLS passthrough or raw TCP.
    pub kind: RouteKind,
    /// Where visitors go.
    pub endpoint: Arc<dyn Endpoint>,
    /// Visitor connection slots: a semaphore capping concurrent visitor connections to this
    /// tunnel; the edge answers 503 past it.
    pub connections: Arc<Semaphore>,
    /// Visitor requests served (raw TCP and passthrough: connections), for the session summary
    /// and metrics.
    pub requests: AtomicU64,
    /// Idle upstream connections the edge keeps for reuse by later visitors (opaque here; they
    /// close when the route is dropped). A short std mutex, never held across an await.
    pub idle: Mutex<Vec<Box<dyn std::any::Any + Send>>>,
    /// The name's recent requests (HTTP routes, when recording is on); carried over from the
    /// same owner's previous route of this name.
    pub(crate) log: Option<Arc<RequestLog>>,
    /// The name is held on another node, whose log is the tunnel's: entries made here go
    /// there ([`Endpoint::record`]) instead of into a log of this node's.
    pub(crate) relays_log: bool,
    /// What other nodes' visitors of this tunnel did, as those nodes report it.
    elsewhere: Elsewhere,
    since: SystemTime,
    /// [`Route::bound_at`].
    bound: Instant,
    max_connections: usize,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Where this route's byte counts go when it is dropped ([`Registry::bytes_moved`]).
    retired: Arc<Retired>,
    /// `max_tunnel_bytes_per_sec`'s buckets; `None` with the limit off.
    pub bandwidth: Option<Bandwidth>,
}

/// What visitors who landed on other nodes of a cluster did with a tunnel of this node, as
/// those nodes report it ([`Route::add_elsewhere`]): kept apart from the route's own counters,
/// which are this node's (its metrics add them up across tunnels).
#[derive(Debug, Default)]
struct Elsewhere {
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Their visitor connections open now. On the holding node each node's report moves it by
    /// the change in its own; on a node that forwards to the tunnel, it is set from the
    /// holder's answer ([`Route::heard_from_holder`]).
    connections: AtomicI64,
    /// On a node that forwards to the tunnel: the holder's cap on its visitor connections (an
    /// owner's quota may differ from this node's setting); 0 until heard.
    cap: AtomicUsize,
}

/// The bytes of routes that are gone, so that the broker's totals since start
/// ([`Registry::bytes_moved`]) do not fall when a tunnel closes. Added to once per route, when
/// its last user drops it: nothing on the visitor path.
#[derive(Debug, Default)]
struct Retired {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Drop for Route {
    fn drop(&mut self) {
        self.retired
            .bytes_in
            .fetch_add(*self.bytes_in.get_mut(), Ordering::Relaxed);
        self.retired
            .bytes_out
            .fetch_add(*self.bytes_out.get_mut(), Ordering::Relaxed);
    }
}

/// What a live tunnel has done since it was bound, for listings ([`Route::stats`]). Read from
/// counters the edge keeps as bytes move, so a long download or WebSocket shows as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteStats {
    /// When this route was bound (the owner's current session), in seconds since the Unix
    /// epoch.
    pub since: u64,
    /// Requests answered by the origin (HTTP), or connections opened to it (TLS passthrough
    /// and raw TCP).
    pub requests: u64,
    /// Bytes from visitors to the origin: HTTP bodies (and upgraded connections' bytes); for
    /// passthrough and raw TCP, every byte.
    pub bytes_in: u64,
    /// Bytes from the origin (and the edge's own pages) to visitors, counted the same way.
    pub bytes_out: u64,
    /// Visitor connections holding one of the tunnel's slots right now.
    pub connections: usize,
    /// The most visitor connections the tunnel takes at once (`max_tunnel_connections`).
    pub max_connections: usize,
}

impl Route {
    /// The name's recent requests: `None` for routes that are not HTTP, and when the broker
    /// records none (`request_log_entries = 0`).
    pub fn request_log(&self) -> Option<&Arc<RequestLog>> {
        self.log.as_ref()
    }

    /// Whether the edge makes an entry for each request: the name keeps a log here, or the
    /// node that holds it keeps one (for every visitor of the cluster).
    pub fn keeps_requests(&self) -> bool {
        self.log.is_some() || self.relays_log
    }

    /// Writes a request's entry into the name's log, here or on the node that holds it.
    pub fn record(&self, entry: RequestEntry) {
        match &self.log {
            Some(log) => log.record(entry),
            None if self.relays_log => self.endpoint.record(entry),
            None => {}
        }
    }

    /// Counts bytes moved between a visitor and the origin. Called by the edge as they move
    /// (per body frame or socket read/write), so relaxed atomics on a tunnel's own counters.
    pub fn count_bytes(&self, visitor_to_origin: u64, origin_to_visitor: u64) {
        if visitor_to_origin > 0 {
            self.bytes_in
                .fetch_add(visitor_to_origin, Ordering::Relaxed);
        }
        if origin_to_visitor > 0 {
            self.bytes_out
                .fetch_add(origin_to_visitor, Ordering::Relaxed);
        }
    }

    /// When this route was made (its session's bind), on this process's monotonic clock: a
    /// node compares it with when it read a name's hold from the database, to tell a hold
    /// taken after this bind from one read before it.
    pub fn bound_at(&self) -> Instant {
        self.bound
    }

    /// Adds what another node's visitors of this tunnel did since that node's last report;
    /// `connections` is the change in how many of them that node holds open.
    pub fn add_elsewhere(&self, requests: u64, bytes_in: u64, bytes_out: u64, connections: i64) {
        let e = &self.elsewhere;
        e.requests.fetch_add(requests, Ordering::Relaxed);
        e.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        e.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        e.connections.fetch_add(connections, Ordering::Relaxed);
    }

    /// On a node that forwards to this tunnel: what its holder last said, `connections` the
    /// visitor connections open on every other node and `cap` the tunnel's cap there.
    pub fn heard_from_holder(&self, connections: u64, cap: usize) {
        let e = &self.elsewhere;
        e.connections.store(
            i64::try_from(connections).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        e.cap.store(cap, Ordering::Relaxed);
    }

    /// Visitor connections of this tunnel open on other nodes, as last heard.
    pub fn elsewhere_connections(&self) -> u64 {
        u64::try_from(self.elsewhere.connections.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// A slot for one more visitor connection, held as long as the permit: `None` at the
    /// tunnel's cap. In a cluster the cap is the tunnel's across the nodes, as far as this node
    /// has heard (the others' connections arrive about once a second, so a burst on several
    /// nodes at once can pass it for that long); alone, this node's semaphore decides.
    pub fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.connections.clone().try_acquire_owned().ok()?;
        let e = &self.elsewhere;
        let elsewhere = usize::try_from(e.connections.load(Ordering::Relaxed)).unwrap_or(0);
        let cap = match e.cap.load(Ordering::Relaxed) {
            0 if elsewhere == 0 => return Some(permit),
            0 => self.max_connections,
            holder => holder.min(self.max_connections),
        };
        // This node's, the new one included.
        let here = self.max_connections - self.connections.available_permits();
        (here + elsewhere <= cap).then_some(permit)
    }

    /// This route's counters with what other nodes reported of their visitors: on the node that
    /// holds the tunnel, its figures across the cluster (a second or so behind for the others').
    pub fn cluster_stats(&self) -> RouteStats {
        let mut stats = self.stats();
        let e = &self.elsewhere;
        // Other nodes' figures: added without overflowing, whatever they sent.
        let add =
            |mine: u64, theirs: &AtomicU64| mine.saturating_add(theirs.load(Ordering::Relaxed));
        stats.requests = add(stats.requests, &e.requests);
        stats.bytes_in = add(stats.bytes_in, &e.bytes_in);
        stats.bytes_out = add(stats.bytes_out, &e.bytes_out);
        // A report made for the route this one replaced can take it below zero for a moment.
        let others = usize::try_from(e.connections.load(Ordering::Relaxed)).unwrap_or(0);
        stats.connections = stats.connections.saturating_add(others);
        stats
    }

    /// A snapshot of this route's counters: what this node's visitors did.
    pub fn stats(&self) -> RouteStats {
        let free = self.connections.available_permits();
        RouteStats {
            since: self
                .since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            requests: self.requests.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            connections: self.max_connections.saturating_sub(free),
            max_connections: self.max_connections,
        }
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// What a visitor's host leads to.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A live tunnel.
    Live(Arc<Route>),
    /// The owner went away less than a grace period ago; try again in this long.
    Parked {
        /// Until the grace period ends.
        retry_after: Duration,
    },
    /// Reserved by someone who is not connected.
    Offline,
    /// No tunnel and none expected.
    Unknown,
}

/// Why a bind was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// Another tenant has the name live, or parked within its grace period.
    #[error("name {0:?} is in use by another user")]
    Taken(String),
    /// The owner already has [`OwnerLimits::routes`] live tunnels.
    #[error(
        "you already have {0} live tunnels, the most this broker allows per user (max_forwards_per_user)"
    )]
    TooManyRoutes(usize),
    /// The owner already holds [`OwnerLimits::tcp_ports`] TCP ports (live or within the grace
    /// period).
    #[error(
        "you already hold {0} TCP ports, the most this broker allows per user (max_tcp_ports_per_user)"
    )]
    TooManyTcpPorts(usize),
}

/// Identifies "the same random forward" across reconnects. OpenSSH does not tell the server the
/// local target of `-R 0:localhost:8096`, so the best stable identity is the key, the bind
/// address it sent, and the forward's position among the session's random forwards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StickyKey {
    /// Fingerprint of the authenticating key.
    pub key: String,
    /// Bind address from `tcpip-forward` (`localhost`, ``, …).
    pub address: String,
    /// 0 for the session's first random forward, 1 for the second, …
    pub ordinal: u32,
}

impl StickyKey {
    /// The key as the audit log's `tunnel.bind` and `tunnel.unbind` rows carry it
    /// (`sticky=FINGERPRINT,ORDINAL,ADDRESS`, at the end of the detail), so a restarted broker
    /// can give reconnecting owners their random names back.
    pub fn to_detail(&self) -> String {
        format!("sticky={},{},{}", self.key, self.ordinal, self.address)
    }

    /// The key a row's detail carries, if any ([`StickyKey::to_detail`]).
    pub fn from_detail(detail: &str) -> Option<Self> {
        let (_, rest) = detail.split_once("sticky=")?;
        let mut parts = rest.splitn(3, ',');
        let key = parts.next()?.to_owned();
        let ordinal = parts.next()?.parse().ok()?;
        let address = parts.next()?.to_owned();
        (!key.is_empty()).then_some(Self {
            key,
            address,
            ordinal,
        })
    }
}

/// What the table holds for one name.
#[derive(Clone)]
pub(crate) enum Entry {
    Live(Arc<Route>),
    Parked {
        owner: i64,
        until: Instant,
        /// Kept for the owner's return within the grace period.
        log: Option<Arc<RequestLog>>,
    },
}

impl Entry {
    /// Whose name this is.
    pub(crate) fn owner(&self) -> i64 {
        match self {
            Entry::Live(r) => r.owner,
            Entry::Parked { owner, .. } => *owner,
        }
    }

    /// The name's request log, if `owner` may carry it on: the same owner, live or within
    /// the grace period (an expired name starts afresh, and never shows one tenant's visitors
    /// to another).
    fn log_for(&self, owner: i64) -> Option<Arc<RequestLog>> {
        match self {
            Entry::Live(r) if r.owner == owner => r.log.clone(),
            Entry::Parked {
                owner: o,
                until,
                log,
            } if *o == owner && *until > Instant::now() => log.clone(),
            _ => None,
        }
    }
}

/// The live routing table. Cheap to share behind an `Arc`.
pub struct Registry {
    /// Live and parked names: lock-free reads, writes that copy a 256th of the map.
    routes: RouteMap,
    /// Names held by sessions on other nodes of a cluster (see `remote.rs`), consulted when
    /// this node has no live route of its own.
    pub(crate) remote: RouteMap,
    sticky: Mutex<HashMap<StickyKey, (String, Instant)>>,
    /// Reserved names, mirrored from the store so an offline owner's name answers 502 rather
    /// than 404 without a database query per visitor.
    reserved: ArcSwap<HashSet<String>>,
    /// Access policies by name (only names that have rules), mirrored from the store like
    /// `reserved`: the edge checks them per request without a query or a lock.
    policies: ArcSwap<HashMap<String, Arc<AccessPolicy>>>,
    /// Verified custom domains, host → name (see `aliases`).
    pub(crate) aliases: crate::aliases::Aliases,
    grace: Duration,
    max_connections: usize,
    limits: OwnerLimits,
    /// Entries per HTTP tunnel's request log; 0 records nothing.
    pub(crate) request_log_entries: usize,
    retired: Arc<Retired>,
    /// Bytes per second each way per tunnel; 0: no limit.
    bandwidth: u64,
    /// Throttling episodes over all tunnels since start.
    throttled: Arc<AtomicU64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("routes", &self.routes.len())
            .finish()
    }
}

/// A name's live route, or how long until its owner may be back, in one of the maps.
fn found_in(map: &RouteMap, name: &str) -> Option<Lookup> {
    map.with(name, |entry| match entry {
        Some(Entry::Live(route)) => Some(Lookup::Live(route.clone())),
        Some(Entry::Parked { until, .. }) => {
            let now = Instant::now();
            (*until > now).then(|| Lookup::Parked {
                retry_after: *until - now,
            })
        }
        None => None,
    })
}

/// An owner's own limits for a tunnel (admin-set quotas); `None` takes the broker's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnLimits {
    /// Concurrent visitor connections.
    pub max_connections: Option<usize>,
    /// Bytes per second each way, shared by the tunnel's visitors; `Some(0)`: no limit.
    pub bytes_per_sec: Option<u64>,
}

impl Registry {
    /// A table whose owners keep names for `grace` after they go away, and whose tunnels take
    /// at most `max_connections` visitor connections at once.
    pub fn new(grace: Duration, max_connections: usize) -> Self {
        Self {
            routes: RouteMap::new(),
            remote: RouteMap::new(),
            sticky: Mutex::new(HashMap::new()),
            reserved: ArcSwap::from_pointee(HashSet::new()),
            policies: ArcSwap::from_pointee(HashMap::new()),
            aliases: Default::default(),
            grace,
            max_connections: max_connections.max(1),
            limits: OwnerLimits::NONE,
            request_log_entries: DEFAULT_REQUEST_LOG_ENTRIES,
            retired: Arc::default(),
            bandwidth: 0,
            throttled: Arc::default(),
        }
    }

    /// Bytes moved between visitors and origins since this table was made, (visitor to
    /// origin, origin to visitor): routes that are gone plus the live ones, read for metrics
    /// when scraped. A route unbound but still in use (a download in flight) is in neither
    /// until it is dropped, so a reading can be lower than the one before: a reader that
    /// needs a monotonic total keeps the highest it has seen.
    pub fn bytes_moved(&self) -> (u64, u64) {
        let mut moved = (
            self.retired.bytes_in.load(Ordering::Relaxed),
            self.retired.bytes_out.load(Ordering::Relaxed),
        );
        for route in self.routes() {
            let stats = route.stats();
            moved.0 += stats.bytes_in;
            moved.1 += stats.bytes_out;
        }
        moved
    }

    /// Limits each tunnel to `bytes_per_sec` each way (upload, download), shared by its
    /// visitors; 0 for no limit. Applies to routes bound from now on.
    pub fn with_bandwidth(mut self, bytes_per_sec: u64) -> Self {
        self.bandwidth = bytes_per_sec;
        self
    }

    /// Times a tunnel began to be held to its bandwidth since start (see [`Bandwidth`]).
    pub fn throttle_episodes(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Keeps the last `entries` requests of each HTTP tunnel name in memory (the default is
    /// [`DEFAULT_REQUEST_LOG_ENTRIES`]); 0 turns recording off.
    pub fn with_request_log(mut self, entries: usize) -> Self {
        self.request_log_entries = entries;
        self
    }

    /// The recent requests of `name`, live or within its grace period. Whoever shows them
    /// checks [`RequestLog::owner`].
    pub fn request_log(&self, name: &str) -> Option<Arc<RequestLog>> {
        self.routes.with(name, |entry| match entry? {
            Entry::Live(route) => route.log.clone(),
            entry @ Entry::Parked { owner, .. } => entry.log_for(*owner),
        })
    }

    /// The requests `name` records from now on (see [`RequestLog::subscribe`]; for the ones
    /// before, [`RequestLog::recent_then_subscribe`]). `None` when the name has no log.
    pub fn subscribe(
        &self,
        name: &str,
    ) -> Option<tokio::sync::broadcast::Receiver<Arc<RequestEntry>>> {
        Some(self.request_log(name)?.subscribe())
    }

    /// Enforces `limits` on every later [`Registry::bind`].
    pub fn with_owner_limits(mut self, limits: OwnerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits [`Registry::bind`] enforces.
    pub fn owner_limits(&self) -> OwnerLimits {
        self.limits
    }

    /// What `owner` holds right now (from the owner index, under the writers' lock for as long
    /// as it takes to count the owner's names).
    pub fn held_by(&self, owner: i64) -> Held {
        held_in(&self.routes.write(), owner, None)
    }

    /// The grace period names are kept for after their owner goes away.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// What `name` leads to right now. Lock-free.
    pub fn lookup(&self, name: &str) -> Lookup {
        let here = found_in(&self.routes, name);
        if let Some(Lookup::Live(route)) = here {
            return Lookup::Live(route);
        }
        // Served by another node of the cluster: a live route there beats this node's memory
        // of the owner's last session here (they reconnected elsewhere within the grace).
        let there = found_in(&self.remote, name);
        if let Some(Lookup::Live(route)) = there {
            return Lookup::Live(route);
        }
        match here.or(there) {
            Some(found) => found,
            None => self.unreserved(name),
        }
    }

    /// [`Registry::lookup`] among this node's own sessions only: what a peer node asks for
    /// (never forwarded again, so two nodes with stale views cannot bounce a visitor).
    pub fn lookup_local(&self, name: &str) -> Lookup {
        found_in(&self.routes, name).unwrap_or_else(|| self.unreserved(name))
    }

    fn unreserved(&self, name: &str) -> Lookup {
        if self.reserved.load().contains(name) {
            Lookup::Offline
        } else {
            Lookup::Unknown
        }
    }

    /// Adds one name to the mirror of reserved names (a claim made by this process).
    pub fn mark_reserved(&self, name: &str) {
        self.reserved.rcu(|set| {
            let mut set = HashSet::clone(set);
            set.insert(name.to_owned());
            set
        });
    }

    /// Whether `name` is reserved (per the mirror).
    pub fn is_reserved(&self, name: &str) -> bool {
        self.reserved.load().contains(name)
    }

    /// Replaces the mirror of reserved names (at start, and whenever the store changes).
    pub fn set_reserved(&self, names: HashSet<String>) {
        self.reserved.store(std::sync::Arc::new(names));
    }

    /// The access policy of `name`, if it has rules. Lock-free.
    pub fn policy(&self, name: &str) -> Option<Arc<AccessPolicy>> {
        self.policies.load().get(name).cloned()
    }

    /// The policy of `route`'s name when it applies to it: rules belong to the reservation's
    /// holder, so they bind the holder's tunnels (a TCP port bound by someone else without a
    /// reservation is not theirs to guard).
    pub fn policy_for(&self, route: &Route) -> Option<Arc<AccessPolicy>> {
        self.policy(&route.name).filter(|p| p.owner == route.owner)
    }

    /// Replaces the policy of one name (`None`: it has no rules any more). Takes effect for
    /// the next request or connection.
    pub fn set_policy(&self, name: &str, policy: Option<AccessPolicy>) {
        let policy = policy.map(Arc::new);
        self.policies.rcu(|map| {
            let mut map = HashMap::clone(map);
            match &policy {
                Some(p) => map.insert(name.to_owned(), p.clone()),
                None => map.remove(name),
            };
            map
        });
    }

    /// Replaces every policy (at start).
    pub fn set_policies(&self, policies: HashMap<String, AccessPolicy>) {
        let map = policies
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v)))
            .collect();
        self.policies.store(Arc::new(map));
    }

    /// Whether nobody holds `name`, live or parked (what a fresh random name must be).
    pub fn is_vacant(&self, name: &str) -> bool {
        let vacant = |entry: Option<&Entry>| match entry {
            None => true,
            Some(Entry::Live(_)) => false,
            Some(Entry::Parked { until, .. }) => *until <= Instant::now(),
        };
        self.routes.with(name, vacant) && self.remote.with(name, vacant)
    }

    /// Whether `owner` may bind `name`: it is neither live nor parked for another owner.
    pub fn is_free_for(&self, name: &str, owner: i64) -> bool {
        self.routes.with(name, |entry| match entry {
            None => true,
            Some(Entry::Live(r)) => r.owner == owner,
            Some(Entry::Parked {
                owner: o, until, ..
            }) => *o == owner || *until <= Instant::now(),
        })
    }

    /// Binds `name` to `endpoint` for `owner`'s `session`. A name the same owner holds from
    /// another (stale) session is taken over at once; the displaced route is returned so its
    /// session can be told. Refused when another owner holds the name, or when it would take
    /// `owner` past its [`OwnerLimits`] (a takeover or a re-bind of a parked name adds nothing).
    pub fn bind(
        &self,
        name: &str,
        owner: i64,
        session: SessionId,
        kind: RouteKind,
        endpoint: Arc<dyn Endpoint>,
    ) -> Result<(Arc<Route>, Option<Arc<Route>>), BindError> {
        self.bind_limited(name, owner, session, kind, endpoint, OwnLimits::default())
    }

    /// [`Registry::bind`], with the owner's own quotas (admin-set) where they have them instead
    /// of the broker-wide `max_tunnel_connections` and bandwidth.
    pub fn bind_limited(
        &self,
        name: &str,
        owner: i64,
        session: SessionId,
        kind: RouteKind,
        endpoint: Arc<dyn Endpoint>,
        own: OwnLimits,
    ) -> Result<(Arc<Route>, Option<Arc<Route>>), BindError> {
        let mut route = self.new_route(name, owner, session, kind, endpoint, own);
        let mut map = self.routes.write();
        let existing = map.get(name);
        let displaced = match &existing {
            Some(Entry::Live(r)) if r.owner != owner => {
                return Err(BindError::Taken(name.to_owned()));
            }
            Some(Entry::Parked {
                owner: o, until, ..
            }) if *o != owner && *until > Instant::now() => {
                return Err(BindError::Taken(name.to_owned()));
            }
            Some(Entry::Live(r)) if r.session != session => Some(r.clone()),
            _ => None,
        };
        let held = held_in(&map, owner, Some(name));
        if held.routes >= self.limits.routes {
            return Err(BindError::TooManyRoutes(held.routes));
        }
        if kind == RouteKind::Tcp && held.tcp_ports >= self.limits.tcp_ports {
            return Err(BindError::TooManyTcpPorts(held.tcp_ports));
        }
        if kind == RouteKind::Http && self.request_log_entries > 0 {
            route.log = Some(
                existing
                    .and_then(|e| e.log_for(owner))
                    .unwrap_or_else(|| Arc::new(RequestLog::new(owner, self.request_log_entries))),
            );
        }
        let route = Arc::new(route);
        map.insert(name, Entry::Live(route.clone()));
        Ok((route, displaced))
    }

    /// A route as this table makes them, not yet in any map.
    pub(crate) fn new_route(
        &self,
        name: &str,
        owner: i64,
        session: SessionId,
        kind: RouteKind,
        endpoint: Arc<dyn Endpoint>,
        own: OwnLimits,
    ) -> Route {
        let max_connections = own
            .max_connections
            .map_or(self.max_connections, |n| n.max(1));
        let bytes_per_sec = own.bytes_per_sec.unwrap_or(self.bandwidth);
        Route {
            name: name.to_owned(),
            owner,
            session,
            kind,
            endpoint,
            connections: Arc::new(Semaphore::new(max_connections)),
            requests: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
            log: None,
            relays_log: false,
            elsewhere: Elsewhere::default(),
            since: SystemTime::now(),
            bound: Instant::now(),
            max_connections,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            retired: self.retired.clone(),
            bandwidth: (bytes_per_sec > 0).then(|| {
                let b = Bandwidth::new(bytes_per_sec, self.throttled.clone());
                if own.bytes_per_sec.is_some() {
                    b.of_quota()
                } else {
                    b
                }
            }),
        }
    }

    /// Unbinds `name` if `session` still serves it, parking it for the grace period. Returns
    /// whether anything changed (a name taken over by a newer session is left alone).
    pub fn unbind(&self, name: &str, session: SessionId) -> bool {
        let until = Instant::now() + self.grace;
        let mut map = self.routes.write();
        match map.get(name) {
            Some(Entry::Live(r)) if r.session == session => {
                let parked = Entry::Parked {
                    owner: r.owner,
                    until,
                    log: r.log.clone(),
                };
                map.insert(name, parked);
                true
            }
            _ => false,
        }
    }

    /// Removes every live route of `owner` without parking them (the owner was disabled).
    pub fn drop_owner(&self, owner: i64) -> Vec<Arc<Route>> {
        let mut map = self.routes.write();
        let mut gone = Vec::new();
        for name in map.names_of(owner) {
            if let Some(Entry::Live(r)) = map.remove(&name) {
                gone.push(r);
            }
        }
        gone
    }

    /// Live routes, for listings.
    pub fn routes(&self) -> Vec<Arc<Route>> {
        self.routes.live()
    }

    /// The random name this forward had before, if it is still within the grace period.
    pub fn sticky(&self, key: &StickyKey) -> Option<String> {
        let sticky = self.sticky.lock().unwrap_or_else(|p| p.into_inner());
        sticky
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(n, _)| n.clone())
    }

    /// Remembers (or refreshes) the random name of a forward; kept until a grace period after
    /// it was last refreshed, which the SSH side does when the forward ends.
    pub fn remember(&self, key: StickyKey, name: &str) {
        self.remember_for(key, name, self.grace);
    }

    /// Remembers the random name of a forward for `left` from now: what is left of its grace
    /// period when it is restored at start from the audit log.
    pub fn remember_for(&self, key: StickyKey, name: &str, left: Duration) {
        let mut sticky = self.sticky.lock().unwrap_or_else(|p| p.into_inner());
        sticky.insert(key, (name.to_owned(), Instant::now() + left));
    }

    /// Drops expired parked names and sticky entries; call now and then.
    pub fn sweep(&self) {
        let now = Instant::now();
        // Only the shards that hold an expired name are copied.
        self.routes
            .write()
            .remove_where(|_, e| matches!(e, Entry::Parked { until, .. } if *until <= now));
        let mut sticky = self.sticky.lock().unwrap_or_else(|p| p.into_inner());
        sticky.retain(|_, (_, until)| *until > now);
    }
}

/// What `owner` holds in `map`, leaving `except` out (the name about to be bound): only the
/// owner's own names are visited (the owner index).
fn held_in(map: &Writer<'_>, owner: i64, except: Option<&str>) -> Held {
    let now = Instant::now();
    let mut held = Held::default();
    map.for_owner(owner, |name, entry| {
        if Some(name) == except {
            return;
        }
        match entry {
            Entry::Live(r) if r.owner == owner => {
                held.routes += 1;
                if r.kind == RouteKind::Tcp {
                    held.tcp_ports += 1;
                }
            }
            Entry::Parked {
                owner: o, until, ..
            } if *o == owner && *until > now && tcp_port(name).is_some() => {
                held.tcp_ports += 1;
            }
            _ => {}
        }
    });
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxStream, OpenError};
    use std::net::SocketAddr;

    struct Nowhere;
    #[async_trait::async_trait]
    impl Endpoint for Nowhere {
        async fn open(&self, _: SocketAddr) -> Result<BoxStream, OpenError> {
            Err(OpenError::Unreachable("test".into()))
        }
        fn notify(&self, _: String) {}
        fn describe(&self) -> String {
            "nowhere".into()
        }
    }

    fn ep() -> Arc<dyn Endpoint> {
        Arc::new(Nowhere)
    }

    #[test]
    fn bind_lookup_unbind_park() {
        let reg = Registry::new(Duration::from_secs(60), 10);
        assert!(matches!(reg.lookup("a"), Lookup::Unknown));
        reg.bind("a", 1, 100, RouteKind::Http, ep()).expect("bind");
        assert!(matches!(reg.lookup("a"), Lookup::Live(r) if r.owner == 1));
        assert!(reg.unbind("a", 100));
        assert!(
            matches!(reg.lookup("a"), Lookup::Parked { retry_after } if retry_after <= Duration::from_secs(60))
        );
        // Parked names stay with their owner.
        assert_eq!(
            reg.bind("a", 2, 200, RouteKind::Http, ep()).map(|_| ()),
            Err(BindError::Taken("a".into()))
        );
        reg.bind("a", 1, 101, RouteKind::Http, ep())
            .expect("owner rebinds");
    }

    #[test]
    fn an_owners_quota_replaces_the_broker_bandwidth() {
        let reg = Registry::new(Duration::from_secs(60), 10).with_bandwidth(1_000);
        let bind = |name: &str, own: OwnLimits| {
            reg.bind_limited(name, 1, 100, RouteKind::Http, ep(), own)
                .expect("bind")
                .0
        };
        let broker = bind("a", OwnLimits::default());
        let b = broker.bandwidth.as_ref().expect("the broker's limit");
        assert_eq!((b.rate(), b.source()), (1_000, "max_tunnel_bytes_per_sec"));
        let own = bind(
            "b",
            OwnLimits {
                bytes_per_sec: Some(50),
                ..OwnLimits::default()
            },
        );
        let b = own.bandwidth.as_ref().expect("the quota");
        assert_eq!(
            (b.rate(), b.source()),
            (50, "quota max_tunnel_bytes_per_sec")
        );
        let lifted = bind(
            "c",
            OwnLimits {
                bytes_per_sec: Some(0),
                ..OwnLimits::default()
            },
        );
        assert!(lifted.bandwidth.is_none(), "a quota of 0 is no limit");
        let free = Registry::new(Duration::from_secs(60), 10);
        let r = free
            .bind_limited("d", 1, 100, RouteKind::Http, ep(), OwnLimits::default())
            .expect("bind")
            .0;
        assert!(r.bandwidth.is_none());
    }

    #[test]
    fn other_tenants_are_refused_and_owner_takes_over() {
        let reg = Registry::new(Duration::from_secs(60), 10);
        reg.bind("a", 1, 100, RouteKind::Http, ep()).expect("bind");
        assert_eq!(
            reg.bind("a", 2, 200, RouteKind::Http, ep()).map(|_| ()),
            Err(BindError::Taken("a".into()))
        );
        let (_, displaced) = reg
            .bind("a", 1, 101, RouteKind::Http, ep())
            .expect("takeover");
        assert_eq!(displaced.map(|r| r.session), Some(100));
        // The stale session ending does not unbind the new one.
        assert!(!reg.unbind("a", 100));
        assert!(matches!(reg.lookup("a"), Lookup::Live(r) if r.session == 101));
    }

    #[test]
    fn reserved_names_without_tunnel_are_offline() {
        let reg = Registry::new(Duration::ZERO, 10);
        reg.set_reserved(HashSet::from(["chat".to_owned()]));
        assert!(matches!(reg.lookup("chat"), Lookup::Offline));
        assert!(matches!(reg.lookup("other"), Lookup::Unknown));
        reg.bind("chat", 1, 100, RouteKind::Http, ep())
            .expect("bind");
        assert!(matches!(reg.lookup("chat"), Lookup::Live(_)));
    }

    #[test]
    fn grace_expiry_frees_names() {
        let reg = Registry::new(Duration::ZERO, 10);
        reg.bind("a", 1, 100, RouteKind::Http, ep()).expect("bind");
        reg.unbind("a", 100);
        assert!(matches!(reg.lookup("a"), Lookup::Unknown));
        assert!(reg.is_free_for("a", 2));
        reg.bind("a", 2, 200, RouteKind::Http, ep())
            .expect("free after grace");
        reg.unbind("a", 200);
        assert_eq!(reg.routes.len(), 1, "expired entry still in the table");
        reg.sweep();
        assert_eq!(reg.routes.len(), 0, "sweep left an expired entry");
        assert!(reg.routes.write().index_is_exact());
    }

    #[test]
    fn drop_owner_removes_everything() {
        let reg = Registry::new(Duration::from_secs(60), 10);
        reg.bind("a", 1, 100, RouteKind::Http, ep()).expect("a");
        reg.bind("b", 1, 100, RouteKind::Http, ep()).expect("b");
        reg.bind("c", 2, 200, RouteKind::Http, ep()).expect("c");
        let mut gone: Vec<_> = reg.drop_owner(1).iter().map(|r| r.name.clone()).collect();
        gone.sort();
        assert_eq!(gone, ["a", "b"]);
        assert!(matches!(reg.lookup("a"), Lookup::Unknown));
        assert_eq!(reg.routes().len(), 1);
    }

    #[test]
    fn a_sticky_key_round_trips_through_an_audit_detail() {
        for address in ["localhost", "", "0.0.0.0", "a,b"] {
            let key = StickyKey {
                key: "SHA256:abc+/def".into(),
                address: address.into(),
                ordinal: 3,
            };
            let detail = format!("localhost:80 {}", key.to_detail());
            assert_eq!(StickyKey::from_detail(&detail), Some(key));
        }
        assert_eq!(StickyKey::from_detail("localhost:80"), None);
        assert_eq!(StickyKey::from_detail("sticky=,1,x"), None);
        assert_eq!(StickyKey::from_detail("sticky=k,notanumber,x"), None);
    }

    #[test]
    fn sticky_names_expire() {
        let key = StickyKey {
            key: "SHA256:x".into(),
            address: "localhost".into(),
            ordinal: 0,
        };
        let reg = Registry::new(Duration::from_secs(60), 10);
        reg.remember(key.clone(), "brave-otter-1");
        assert_eq!(reg.sticky(&key).as_deref(), Some("brave-otter-1"));
        let reg = Registry::new(Duration::ZERO, 10);
        reg.remember(key.clone(), "brave-otter-1");
        assert_eq!(reg.sticky(&key), None);
    }

    #[test]
    fn owner_limits_count_live_routes_and_held_ports() {
        let reg = Registry::new(Duration::from_secs(60), 10).with_owner_limits(OwnerLimits {
            routes: 3,
            tcp_ports: 1,
        });
        reg.bind("a", 1, 100, RouteKind::Http, ep()).expect("a");
        reg.bind(&tcp_name(20000), 1, 100, RouteKind::Tcp, ep())
            .expect("first port");
        assert_eq!(
            reg.bind(&tcp_name(20001), 1, 100, RouteKind::Tcp, ep())
                .map(|_| ()),
            Err(BindError::TooManyTcpPorts(1))
        );
        // A parked port still counts: its owner keeps it for the grace period.
        assert!(reg.unbind(&tcp_name(20000), 100));
        assert_eq!(
            reg.held_by(1),
            Held {
                routes: 1,
                tcp_ports: 1
            }
        );
        assert_eq!(
            reg.bind(&tcp_name(20001), 1, 101, RouteKind::Tcp, ep())
                .map(|_| ()),
            Err(BindError::TooManyTcpPorts(1))
        );
        // ...but taking the same port back adds nothing.
        reg.bind(&tcp_name(20000), 1, 101, RouteKind::Tcp, ep())
            .expect("own parked port back");
        reg.bind("b", 1, 101, RouteKind::Http, ep()).expect("b");
        assert_eq!(
            reg.bind("c", 1, 101, RouteKind::Http, ep()).map(|_| ()),
            Err(BindError::TooManyRoutes(3))
        );
        // A takeover of a name the owner holds is not a new route; other owners are unaffected.
        reg.bind("a", 1, 102, RouteKind::Http, ep())
            .expect("takeover");
        reg.bind("c", 2, 200, RouteKind::Http, ep())
            .expect("other owner");
        assert_eq!(
            reg.held_by(2),
            Held {
                routes: 1,
                tcp_ports: 0
            }
        );
    }

    fn entry(path: &str) -> crate::RequestEntry {
        crate::RequestEntry {
            at_ms: 0,
            method: "GET".into(),
            path: path.into(),
            status: 200,
            duration: Duration::ZERO,
            bytes_in: 0,
            bytes_out: 0,
            visitor: [127, 0, 0, 1].into(),
            user_agent: String::new(),
            headers: String::new(),
            complete: true,
        }
    }

    fn paths(reg: &Registry, name: &str) -> Vec<String> {
        reg.request_log(name)
            .map(|l| l.recent().iter().map(|e| e.path.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_names_request_log_outlives_reconnects_but_not_the_name() {
        let reg = Registry::new(Duration::from_secs(60), 10).with_request_log(5);
        let (route, _) = reg.bind("a", 1, 100, RouteKind::Http, ep()).expect("a");
        let log = route.request_log().expect("HTTP routes record");
        assert_eq!((log.owner(), log.capacity()), (1, 5));
        log.record(entry("/1"));
        let mut live = reg.subscribe("a").expect("subscribe");
        // Parked, then back: the same log, and a subscriber goes on receiving.
        assert!(reg.unbind("a", 100));
        assert_eq!(paths(&reg, "a"), ["/1"]);
        let (back, _) = reg.bind("a", 1, 101, RouteKind::Http, ep()).expect("back");
        back.request_log().expect("log").record(entry("/2"));
        assert_eq!(paths(&reg, "a"), ["/1", "/2"]);
        assert_eq!(live.try_recv().map(|e| e.path.clone()), Ok("/2".into()));
        // A takeover by the same owner's new session keeps it too.
        reg.bind("a", 1, 102, RouteKind::Http, ep())
            .expect("takeover");
        assert_eq!(paths(&reg, "a"), ["/1", "/2"]);
        // Gone with the name: dropped owner, and the subscriber's feed ends.
        drop((route, back));
        reg.drop_owner(1);
        assert!(reg.request_log("a").is_none());
        assert_eq!(
            live.try_recv().map(|e| e.path.clone()),
            Err(tokio::sync::broadcast::error::TryRecvError::Closed)
        );
    }

    #[test]
    fn an_expired_name_starts_a_fresh_log_for_anyone() {
        let reg = Registry::new(Duration::ZERO, 10);
        let (route, _) = reg.bind("a", 1, 100, RouteKind::Http, ep()).expect("a");
        route.request_log().expect("log").record(entry("/secret"));
        reg.unbind("a", 100);
        assert!(reg.request_log("a").is_none(), "past the grace period");
        let (other, _) = reg.bind("a", 2, 200, RouteKind::Http, ep()).expect("b");
        let log = other.request_log().expect("log");
        assert_eq!(log.owner(), 2);
        assert!(
            log.recent().is_empty(),
            "another tenant saw the old visitors"
        );
        reg.unbind("a", 200);
        let (again, _) = reg.bind("a", 2, 201, RouteKind::Http, ep()).expect("c");
        assert!(again.request_log().expect("log").recent().is_empty());
    }

    #[test]
    fn only_http_routes_record_and_zero_turns_it_off() {
        let reg = Registry::new(Duration::from_secs(60), 10);
        let (http, _) = reg.bind("a", 1, 100, RouteKind::Http, ep()).expect("a");
        assert_eq!(
            http.request_log().map(|l| l.capacity()),
            Some(crate::DEFAULT_REQUEST_LOG_ENTRIES)
        );
        for (name, kind) in [
            ("b", RouteKind::TlsPassthrough),
            (&tcp_name(20000)[..], RouteKind::Tcp),
        ] {
            let (r, _) = reg.bind(name, 1, 100, kind, ep()).expect("bind");
            assert!(r.request_log().is_none(), "{name}");
        }
        let off = Registry::new(Duration::from_secs(60), 10).with_request_log(0);
        let (r, _) = off.bind("a", 1, 100, RouteKind::Http, ep()).expect("a");
        assert!(r.request_log().is_none());
        assert!(off.subscribe("a").is_none());
    }

    #[test]
    fn route_stats_count_bytes_and_visitor_slots() {
        let reg = Registry::new(Duration::from_secs(60), 3);
        let before = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (route, _) = reg.bind("a", 1, 100, RouteKind::Http, ep()).expect("a");
        let held = route.connections.clone().try_acquire_owned().expect("slot");
        route.requests.fetch_add(2, Ordering::Relaxed);
        route.count_bytes(10, 0);
        route.count_bytes(5, 700);
        let stats = route.stats();
        assert!(
            stats.since >= before && stats.since <= before + 5,
            "{stats:?}"
        );
        assert_eq!(
            (
                stats.requests,
                stats.bytes_in,
                stats.bytes_out,
                stats.connections,
                stats.max_connections
            ),
            (2, 15, 700, 1, 3)
        );
        drop(held);
        assert_eq!(route.stats().connections, 0);
    }

    /// The cap on a tunnel's visitor connections counts those other nodes of a cluster hold:
    /// on the holder as they report them, on a forwarding node as the holder last said (with
    /// its cap, an owner's quota); alone, this node's semaphore decides.
    #[test]
    fn a_tunnels_cap_counts_other_nodes_connections() {
        let reg = Registry::new(Duration::from_secs(60), 3);
        let (held, _) = reg.bind("a", 1, 100, RouteKind::Http, ep()).expect("a");
        let alone: Vec<_> = (0..3).filter_map(|_| held.take_slot()).collect();
        assert_eq!(alone.len(), 3);
        assert!(held.take_slot().is_none(), "the semaphore's cap");
        drop(alone);
        // The holder: node 2 reports two open, then one of them closes.
        held.add_elsewhere(0, 0, 0, 2);
        let one = held.take_slot().expect("1 here + 2 elsewhere = 3");
        assert!(held.take_slot().is_none(), "2 here + 2 elsewhere > 3");
        held.add_elsewhere(0, 0, 0, -1);
        let two = held.take_slot().expect("2 here + 1 elsewhere = 3");
        assert_eq!(held.cluster_stats().connections, 3);
        assert_eq!(held.stats().connections, 2, "this node's own");
        drop((one, two));

        // A node forwarding to it: the holder's answer, and its cap when lower.
        let remote = reg.bind_remote("b", 1, RouteKind::Http, ep());
        remote.heard_from_holder(1, 0);
        let first = remote.take_slot().expect("1 + 1");
        let second = remote.take_slot().expect("2 + 1");
        assert!(remote.take_slot().is_none(), "3 + 1 > 3");
        drop(second);
        remote.heard_from_holder(1, 2);
        assert!(remote.take_slot().is_none(), "2 + 1 > the holder's 2");
        remote.heard_from_holder(0, 2);
        let again = remote.take_slot().expect("2 here and none elsewhere");
        assert!(remote.take_slot().is_none(), "3 here > the holder's 2");
        assert_eq!(remote.elsewhere_connections(), 0);
        drop((first, again));
    }

    #[test]
    fn bytes_moved_outlive_their_routes() {
        let reg = Registry::new(Duration::from_secs(60), 3);
        let (a, _) = reg.bind("a", 1, 100, RouteKind::Http, ep()).expect("a");
        let (b, _) = reg.bind("b", 2, 200, RouteKind::Tcp, ep()).expect("b");
        a.count_bytes(10, 100);
        b.count_bytes(1, 2);
        assert_eq!(reg.bytes_moved(), (11, 102));
        reg.unbind("a", 100);
        // Unbound but still held (a download in flight): counted again once dropped.
        a.count_bytes(5, 0);
        drop(a);
        assert_eq!(reg.bytes_moved(), (16, 102));
        reg.sweep();
        drop(b);
        assert_eq!(reg.bytes_moved(), (16, 102), "b is live: counted once");
    }

    /// A tiny xorshift, so the random walks below are the same on every run.
    struct Walk(u64);
    impl Walk {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Random binds, unbinds, owner drops and sweeps against a naive model (name → owner and
    /// live session): after each step the owner index matches the shards exactly, and every
    /// lookup and every owner's holdings match the model.
    #[test]
    fn the_owner_index_stays_exact() {
        for (seed, grace) in [(1, 60), (2, 0), (3, 60), (4, 0)] {
            let limits = OwnerLimits {
                routes: 4,
                tcp_ports: 2,
            };
            let reg = Registry::new(Duration::from_secs(grace), 10).with_owner_limits(limits);
            // name → (owner, Some(session) when live, None when parked).
            let mut model: HashMap<String, (i64, Option<SessionId>)> = HashMap::new();
            let names: Vec<String> = (0..8)
                .map(|i| format!("n{i}"))
                .chain((0..4).map(|p| tcp_name(20000 + p)))
                .collect();
            let mut walk = Walk(seed);
            let mut session = 0;
            for step in 0..3_000 {
                let name = &names[walk.below(names.len() as u64) as usize];
                let owner = walk.below(4) as i64 + 1;
                let held = |model: &HashMap<String, (i64, Option<SessionId>)>, o: i64| {
                    let mut h = Held::default();
                    for (n, (owner, live)) in model {
                        if *owner == o && n != name {
                            h.routes += usize::from(live.is_some());
                            h.tcp_ports += usize::from(tcp_port(n).is_some());
                        }
                    }
                    h
                };
                match walk.below(10) {
                    0..=4 => {
                        session += 1;
                        let kind = if tcp_port(name).is_some() {
                            RouteKind::Tcp
                        } else {
                            RouteKind::Http
                        };
                        let h = held(&model, owner);
                        let expected = match model.get(name) {
                            Some((o, _)) if *o != owner => Err(BindError::Taken(name.clone())),
                            _ if h.routes >= limits.routes => {
                                Err(BindError::TooManyRoutes(h.routes))
                            }
                            _ if kind == RouteKind::Tcp && h.tcp_ports >= limits.tcp_ports => {
                                Err(BindError::TooManyTcpPorts(h.tcp_ports))
                            }
                            _ => Ok(()),
                        };
                        let got = reg.bind(name, owner, session, kind, ep()).map(|_| ());
                        assert_eq!(got, expected, "step {step}: bind {name} for {owner}");
                        if got.is_ok() {
                            model.insert(name.clone(), (owner, Some(session)));
                        }
                    }
                    5..=7 => {
                        // Mostly the session that serves it, sometimes a stale one.
                        let live = model.get(name).and_then(|(_, s)| *s);
                        let s = match live {
                            Some(s) if walk.below(4) > 0 => s,
                            _ => session + 1,
                        };
                        let expected = live == Some(s);
                        assert_eq!(reg.unbind(name, s), expected, "step {step}: unbind {name}");
                        if expected {
                            if grace == 0 {
                                model.remove(name);
                            } else if let Some(e) = model.get_mut(name) {
                                e.1 = None;
                            }
                        }
                    }
                    8 => {
                        let mut gone: Vec<String> = reg
                            .drop_owner(owner)
                            .iter()
                            .map(|r| r.name.clone())
                            .collect();
                        gone.sort();
                        let mut expected: Vec<String> = model
                            .iter()
                            .filter(|(_, (o, live))| *o == owner && live.is_some())
                            .map(|(n, _)| n.clone())
                            .collect();
                        expected.sort();
                        assert_eq!(gone, expected, "step {step}: drop {owner}");
                        model.retain(|_, (o, _)| *o != owner);
                    }
                    _ => reg.sweep(),
                }
                assert!(reg.routes.write().index_is_exact(), "step {step}");
                for n in &names {
                    let seen = match reg.lookup(n) {
                        Lookup::Live(r) => Some((r.owner, Some(r.session))),
                        Lookup::Parked { .. } => Some((-1, None)),
                        _ => None,
                    };
                    let expected = match model.get(n) {
                        Some((o, Some(s))) => Some((*o, Some(*s))),
                        Some((_, None)) => Some((-1, None)),
                        None => None,
                    };
                    assert_eq!(seen, expected, "step {step}: lookup {n}");
                }
                for o in 1..=4 {
                    let mut h = Held::default();
                    for (n, (owner, live)) in &model {
                        if *owner == o {
                            h.routes += usize::from(live.is_some());
                            h.tcp_ports += usize::from(tcp_port(n).is_some());
                        }
                    }
                    assert_eq!(reg.held_by(o), h, "step {step}: held by {o}");
                }
            }
        }
    }

    #[test]
    fn tcp_names_round_trip() {
        assert_eq!(tcp_port(&tcp_name(40100)), Some(40100));
        assert_eq!(tcp_port("chat"), None);
        assert_eq!(tcp_port("tcp:x"), None);
        assert_eq!(tcp_port("tcp:70000"), None);
    }
}

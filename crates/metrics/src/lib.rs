//! What the broker counts, as handles resolved once.
//!
//! The edge, the SSH server, the certificate manager and the DNS reconciler each hold an
//! `Arc<Metrics>` and bump its handles. Every series (each status class, limit, reason…) is
//! registered when [`Metrics::new`] runs, so counting a request is an index into an array and
//! an atomic add, never a lookup by name and labels; and every series shows in `/metrics`
//! from the start, at 0, as Prometheus wants. Labels are fixed small sets: no tenant, tunnel
//! or visitor ever becomes a label.
//!
//! The recorder is handed in, not installed globally: the broker gives it a Prometheus
//! recorder and serves its rendering on the admin listener; libraries and their tests use
//! [`Metrics::noop`]. Gauges that describe state (live tunnels, sessions, certificate expiry)
//! are set by the broker when it is scraped, from the state itself, rather than kept in step
//! with every change here.
#![warn(missing_docs)]

use std::time::Duration;

pub use metrics::{Counter, Gauge, Histogram, Recorder};
use metrics::{Key, KeyName, Label, Level, Metadata, SharedString, Unit};

/// The request latency histogram's name, for the recorder's bucket configuration.
pub const REQUEST_DURATION: &str = "warren_http_request_duration_seconds";

/// Upper bounds of the request latency buckets, in seconds: from a keep-alive request through
/// a local tunnel (~1 ms) to a slow origin.
pub const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A limit the broker enforced: each hit is counted under its configuration key's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A tunnel already had `max_tunnel_connections` visitor connections (503).
    TunnelConnections,
    /// A tunnel began to be held to `max_tunnel_bytes_per_sec` (one hit per episode: its
    /// visitors are slowed, not refused).
    TunnelBandwidth,
    /// A user already had `max_forwards_per_user` live tunnels.
    ForwardsPerUser,
    /// A user's own `max_tunnels` quota.
    TunnelQuota,
    /// A session already held `max_forwards_per_session` forwards.
    ForwardsPerSession,
    /// A user already held `max_tcp_ports_per_user` TCP ports.
    TcpPortsPerUser,
    /// A user already held `max_names_per_user` names.
    NamesPerUser,
    /// A user claimed `max_claims_per_hour` names within the hour.
    ClaimsPerHour,
    /// A request head past `max_header_bytes` or `max_headers` (431).
    RequestHead,
    /// A visitor sent no complete request head within `header_timeout` (408).
    HeaderTimeout,
    /// An SSH client did not authenticate within `auth_timeout`.
    AuthTimeout,
    /// An IP already had `ssh_max_startups_per_ip` SSH connections not yet authenticated.
    SshStartupsPerIp,
    /// The broker already had `ssh_max_startups` SSH connections not yet authenticated.
    SshStartups,
    /// An IP opened SSH connections faster than `ssh_connections_per_minute_per_ip`.
    SshConnectionRate,
    /// An IP failed SSH authentication `ssh_auth_failures_per_minute_per_ip` times this minute:
    /// a connection or a key from it refused.
    SshAuthFailures,
    /// An IP already had `max_visitor_connections_per_ip` visitor connections (429 / close).
    VisitorConnectionsPerIp,
    /// An IP opened visitor connections faster than `visitor_connections_per_sec_per_ip`
    /// (429 / close).
    VisitorConnectionRate,
    /// The broker already had `max_pending_visitor_connections` visitor connections without a
    /// request head or ClientHello (503 / close).
    PendingVisitors,
}

impl Limit {
    /// Every limit, in label order.
    pub const ALL: [Limit; 18] = [
        Limit::TunnelConnections,
        Limit::TunnelBandwidth,
        Limit::ForwardsPerUser,
        Limit::TunnelQuota,
        Limit::ForwardsPerSession,
        Limit::TcpPortsPerUser,
        Limit::NamesPerUser,
        Limit::ClaimsPerHour,
        Limit::RequestHead,
        Limit::HeaderTimeout,
        Limit::AuthTimeout,
        Limit::SshStartupsPerIp,
        Limit::SshStartups,
        Limit::SshConnectionRate,
        Limit::SshAuthFailures,
        Limit::VisitorConnectionsPerIp,
        Limit::VisitorConnectionRate,
        Limit::PendingVisitors,
    ];

    /// The `limit` label: the setting's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::TunnelConnections => "max_tunnel_connections",
            Limit::TunnelBandwidth => "max_tunnel_bytes_per_sec",
            Limit::ForwardsPerUser => "max_forwards_per_user",
            Limit::TunnelQuota => "max_tunnels",
            Limit::ForwardsPerSession => "max_forwards_per_session",
            Limit::TcpPortsPerUser => "max_tcp_ports_per_user",
            Limit::NamesPerUser => "max_names_per_user",
            Limit::ClaimsPerHour => "max_claims_per_hour",
            Limit::RequestHead => "max_header_bytes",
            Limit::HeaderTimeout => "header_timeout",
            Limit::AuthTimeout => "auth_timeout",
            Limit::SshStartupsPerIp => "ssh_max_startups_per_ip",
            Limit::SshStartups => "ssh_max_startups",
            Limit::SshConnectionRate => "ssh_connections_per_minute_per_ip",
            Limit::SshAuthFailures => "ssh_auth_failures_per_minute_per_ip",
            Limit::VisitorConnectionsPerIp => "max_visitor_connections_per_ip",
            Limit::VisitorConnectionRate => "visitor_connections_per_sec_per_ip",
            Limit::PendingVisitors => "max_pending_visitor_connections",
        }
    }
}

/// Why an SSH client was refused at authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// It offered a key nobody registered.
    UnknownKey,
    /// The key is a disabled user's.
    DisabledUser,
    /// The store could not be asked.
    StoreError,
}

impl AuthFailure {
    /// Every reason, in label order.
    pub const ALL: [AuthFailure; 3] = [
        AuthFailure::UnknownKey,
        AuthFailure::DisabledUser,
        AuthFailure::StoreError,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::DisabledUser => "disabled_user",
            AuthFailure::StoreError => "store_error",
        }
    }
}

/// Why a `tcpip-forward` request (an `ssh -R`) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardRefusal {
    /// The store did not answer (down, or its pool busy past the acquire timeout).
    StoreError,
    /// The broker's rules: a name taken or not the owner's, a limit, a malformed request.
    Policy,
}

impl ForwardRefusal {
    /// Every reason, in label order.
    pub const ALL: [ForwardRefusal; 2] = [ForwardRefusal::StoreError, ForwardRefusal::Policy];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardRefusal::StoreError => "store_error",
            ForwardRefusal::Policy => "policy",
        }
    }
}

/// Which listener a visitor connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Plain HTTP.
    Http,
    /// HTTPS: terminated here or passed through.
    Https,
    /// A raw TCP tunnel's port.
    Tcp,
}

impl Listener {
    const ALL: [Listener; 3] = [Listener::Http, Listener::Https, Listener::Tcp];

    fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
            Listener::Tcp => "tcp",
        }
    }
}

/// Route kinds as the `kind` label spells them (the registry's words).
pub const ROUTE_KINDS: [&str; 3] = ["http", "tls", "tcp"];

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every handle the broker counts with. Cheap to share (`Arc`), each handle an `Arc` into the
/// recorder's storage.
#[derive(Clone)]
pub struct Metrics {
    http_requests: [Counter; 5],
    request_duration: Histogram,
    visitor_connections: [Counter; 3],
    limit_hits: [Counter; Limit::ALL.len()],
    auth_failures: [Counter; AuthFailure::ALL.len()],
    forwards_refused: [Counter; ForwardRefusal::ALL.len()],
    /// Connections from `proxy_protocol_from` sources closed for their PROXY header, on the
    /// SSH listener and on each visitor listener.
    proxy_refused_ssh: Counter,
    proxy_refused: [Counter; 3],
    /// TCP connections accepted on the SSH listener.
    pub ssh_connections: Counter,
    /// SSH connections that authenticated.
    pub ssh_logins: Counter,
    /// ACME orders that ended with a certificate.
    pub acme_issued: Counter,
    /// ACME orders that failed.
    pub acme_failed: Counter,
    /// Webhook deliveries a receiver accepted (2xx).
    pub webhook_delivered: Counter,
    /// Webhook attempts that failed and will be retried.
    pub webhook_failed: Counter,
    /// Webhook deliveries given up after their last attempt.
    pub webhook_given_up: Counter,
    recorder: Option<std::sync::Arc<dyn Recorder + Send + Sync>>,
    /// Live tunnels by route kind, in [`ROUTE_KINDS`] order (set at scrape time).
    pub tunnels_live: [Gauge; 3],
    /// Live SSH sessions that authenticated (set at scrape time).
    pub sessions_live: Gauge,
    /// Visitor connections holding a tunnel's slot (set at scrape time).
    pub visitor_connections_live: Gauge,
    /// Body bytes from visitors to origins since start (set at scrape time, never lowered).
    pub bytes_in: Counter,
    /// Body bytes from origins to visitors since start (as `bytes_in`).
    pub bytes_out: Counter,
    /// Names served with a certificate (set at scrape time).
    pub certificates: Gauge,
    /// The soonest expiry among them, Unix seconds; 0 with none (set at scrape time).
    pub certificate_expiry: Gauge,
    /// Nodes on this database whose heartbeat is within their lease, this one included (set
    /// at each heartbeat).
    pub cluster_nodes_alive: Gauge,
    /// 1 while this node holds the cluster's ACME lease (it orders certificates and drives a
    /// remote DNS provider for all), else 0.
    pub cluster_acme_leader: Gauge,
    /// Tunnel names refused because a session on another live node holds them.
    pub cluster_claims_refused: Counter,
    /// Heartbeats that could not be written (the database was unreachable, or this node's
    /// row was taken over).
    pub cluster_heartbeat_failures: Counter,
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, *v))
            .collect::<Vec<_>>(),
    )
}

static META: Metadata<'static> = Metadata::new("warren", Level::INFO, Some(module_path!()));

impl Metrics {
    /// Counts into nothing: libraries and tests that nobody scrapes.
    pub fn noop() -> Self {
        Self::build(None)
    }

    /// Describes every metric to `recorder` and registers every series it will have.
    pub fn new(recorder: std::sync::Arc<dyn Recorder + Send + Sync>) -> Self {
        describe(&*recorder);
        Self::build(Some(recorder))
    }

    fn build(recorder: Option<std::sync::Arc<dyn Recorder + Send + Sync>>) -> Self {
        let r = recorder.as_deref();
        let counter = |name, labels: &[(&'static str, &'static str)]| match r {
            Some(r) => r.register_counter(&key(name, labels), &META),
            None => Counter::noop(),
        };
        let gauge = |name, labels: &[(&'static str, &'static str)]| match r {
            Some(r) => r.register_gauge(&key(name, labels), &META),
            None => Gauge::noop(),
        };
        Self {
            http_requests: CLASSES.map(|c| counter("warren_http_requests_total", &[("class", c)])),
            request_duration: match r {
                Some(r) => r.register_histogram(&key(REQUEST_DURATION, &[]), &META),
                None => Histogram::noop(),
            },
            visitor_connections: Listener::ALL.map(|l| {
                counter(
                    "warren_visitor_connections_total",
                    &[("listener", l.as_str())],
                )
            }),
            limit_hits: Limit::ALL
                .map(|l| counter("warren_limit_hits_total", &[("limit", l.as_str())])),
            auth_failures: AuthFailure::ALL
                .map(|a| counter("warren_ssh_auth_failures_total", &[("reason", a.as_str())])),
            forwards_refused: ForwardRefusal::ALL.map(|a| {
                counter(
                    "warren_ssh_forwards_refused_total",
                    &[("reason", a.as_str())],
                )
            }),
            proxy_refused_ssh: counter(
                "warren_proxy_headers_refused_total",
                &[("listener", "ssh")],
            ),
            proxy_refused: Listener::ALL.map(|l| {
                counter(
                    "warren_proxy_headers_refused_total",
                    &[("listener", l.as_str())],
                )
            }),
            ssh_connections: counter("warren_ssh_connections_total", &[]),
            ssh_logins: counter("warren_ssh_logins_total", &[]),
            acme_issued: counter("warren_acme_orders_total", &[("result", "issued")]),
            acme_failed: counter("warren_acme_orders_total", &[("result", "failed")]),
            webhook_delivered: counter("warren_webhook_deliveries_total", &[("result", "ok")]),
            webhook_failed: counter("warren_webhook_deliveries_total", &[("result", "failed")]),
            webhook_given_up: counter("warren_webhook_deliveries_total", &[("result", "given_up")]),
            tunnels_live: ROUTE_KINDS.map(|k| gauge("warren_tunnels_live", &[("kind", k)])),
            sessions_live: gauge("warren_ssh_sessions_live", &[]),
            visitor_connections_live: gauge("warren_visitor_connections_live", &[]),
            bytes_in: counter("warren_visitor_bytes_total", &[("direction", "in")]),
            bytes_out: counter("warren_visitor_bytes_total", &[("direction", "out")]),
            certificates: gauge("warren_certificates", &[]),
            certificate_expiry: gauge("warren_certificate_expiry_earliest_seconds", &[]),
            cluster_nodes_alive: gauge("warren_cluster_nodes_alive", &[]),
            cluster_acme_leader: gauge("warren_cluster_acme_leader", &[]),
            cluster_claims_refused: counter("warren_cluster_claims_refused_total", &[]),
            cluster_heartbeat_failures: counter("warren_cluster_heartbeat_failures_total", &[]),
            recorder,
        }
    }

    /// Counts one HTTP request answered with `status` after `elapsed` (to its response head).
    #[inline]
    pub fn request(&self, status: u16, elapsed: Duration) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        if let Some(c) = self.http_requests.get(class) {
            c.increment(1);
        }
        self.request_duration.record(elapsed.as_secs_f64());
    }

    /// Counts a visitor connection accepted on `listener`.
    #[inline]
    pub fn visitor_connection(&self, listener: Listener) {
        self.visitor_connections[listener as usize].increment(1);
    }

    /// The count of connections a listed load balancer opened on `listener` without a
    /// well-formed PROXY header (`None`: the SSH listener).
    pub fn proxy_headers_refused(&self, listener: Option<Listener>) -> Counter {
        match listener {
            Some(l) => self.proxy_refused[l as usize].clone(),
            None => self.proxy_refused_ssh.clone(),
        }
    }

    /// Counts one hit of `limit`.
    pub fn limit_hit(&self, limit: Limit) {
        self.limit_hits[limit as usize].increment(1);
    }

    /// The counter of `limit`, for code that holds it rather than this struct.
    pub fn limit_counter(&self, limit: Limit) -> Counter {
        self.limit_hits[limit as usize].clone()
    }

    /// Counts one refused authentication.
    pub fn auth_failure(&self, why: AuthFailure) {
        self.auth_failures[why as usize].increment(1);
    }

    /// Counts a refused `ssh -R` forward.
    pub fn forward_refused(&self, why: ForwardRefusal) {
        self.forwards_refused[why as usize].increment(1);
    }

    /// The counter of DNS provider errors for `provider` (`cloudflare`, `rfc2136`, …): one
    /// provider per broker, registered when the provider is built.
    pub fn dns_errors(&self, provider: &'static str) -> Counter {
        match &self.recorder {
            Some(r) => r.register_counter(
                &key("warren_dns_errors_total", &[("provider", provider)]),
                &META,
            ),
            None => Counter::noop(),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("recording", &self.recorder.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::noop()
    }
}

/// The `# HELP` line of each metric.
fn describe(r: &dyn Recorder) {
    let c = |name: &'static str, unit: Option<Unit>, help: &'static str| {
        r.describe_counter(KeyName::from(name), unit, SharedString::from(help));
    };
    c(
        "warren_http_requests_total",
        None,
        "HTTP requests answered at the edge (tunnels, pages, console), by status class.",
    );
    c(
        "warren_visitor_connections_total",
        None,
        "Visitor connections accepted, by listener.",
    );
    c(
        "warren_limit_hits_total",
        None,
        "Times a limit refused something, by the setting that bounds it.",
    );
    c(
        "warren_ssh_auth_failures_total",
        None,
        "SSH authentications refused, by reason (a client offering several keys counts each).",
    );
    c(
        "warren_ssh_forwards_refused_total",
        None,
        "SSH remote forwards (ssh -R) refused, by reason: store_error (the database did not answer) or policy.",
    );
    c(
        "warren_proxy_headers_refused_total",
        None,
        "Connections from proxy_protocol_from sources closed because they did not start with a well-formed PROXY protocol header in time, by listener (ssh, http, https, tcp).",
    );
    c(
        "warren_ssh_connections_total",
        None,
        "TCP connections accepted on the SSH listener.",
    );
    c(
        "warren_ssh_logins_total",
        None,
        "SSH connections that authenticated.",
    );
    c(
        "warren_acme_orders_total",
        None,
        "ACME certificate orders, by result.",
    );
    c(
        "warren_webhook_deliveries_total",
        None,
        "Webhook delivery attempts, by result: ok (2xx), failed (will be retried), given_up (the last attempt failed).",
    );
    c(
        "warren_visitor_bytes_total",
        Some(Unit::Bytes),
        "Bytes between visitors and origins through tunnels (HTTP bodies; every byte for TLS passthrough, TCP and upgrades).",
    );
    c(
        "warren_dns_errors_total",
        None,
        "DNS provider calls that failed, by provider.",
    );
    c(
        "warren_cluster_claims_refused_total",
        None,
        "Tunnel names refused because a session on another live node holds them.",
    );
    c(
        "warren_cluster_heartbeat_failures_total",
        None,
        "Node heartbeats that could not be written; past the lease, other nodes take this one's names.",
    );
    let g = |name: &'static str, help: &'static str| {
        r.describe_gauge(KeyName::from(name), None, SharedString::from(help));
    };
    g("warren_tunnels_live", "Live tunnels, by kind.");
    g(
        "warren_cluster_nodes_alive",
        "Brokers on this database whose heartbeat is within their lease, this one included.",
    );
    g(
        "warren_cluster_acme_leader",
        "1 while this node orders certificates (and drives a remote DNS provider) for the cluster.",
    );
    g("warren_ssh_sessions_live", "Authenticated SSH sessions.");
    g(
        "warren_visitor_connections_live",
        "Visitor connections holding a tunnel's connection slot.",
    );
    g(
        "warren_certificates",
        "Names served with a certificate (a certificate for several names counts once per name).",
    );
    g(
        "warren_certificate_expiry_earliest_seconds",
        "When the certificate that expires first expires, in Unix seconds (0 with none).",
    );
    r.describe_histogram(
        KeyName::from(REQUEST_DURATION),
        Some(Unit::Seconds),
        SharedString::from(
            "Time from a request's arrival at the edge to its response head, in seconds.",
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_indexed_in_order() {
        for (i, l) in Limit::ALL.iter().enumerate() {
            assert_eq!(*l as usize, i);
        }
        for (i, a) in AuthFailure::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
        }
        for (i, l) in Listener::ALL.iter().enumerate() {
            assert_eq!(*l as usize, i);
        }
    }

    #[test]
    fn noop_counts_nothing_and_does_not_panic() {
        let m = Metrics::noop();
        m.request(0, Duration::ZERO);
        m.request(999, Duration::from_secs(1));
        m.limit_hit(Limit::AuthTimeout);
        m.dns_errors("builtin").increment(1);
    }
}

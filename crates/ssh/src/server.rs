//! The accept loop and the state every connection shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::server::Config;
use russh::{MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};
use warren_admit::{Admission, AuthFailures, Refusal, Throttle};
use warren_metrics::{Limit, Metrics};
use warren_registry::{PortAllocator, Registry, RouteKind};
use warren_shards::Shards;
use warren_store::Store;
use warren_tenants::PublicUrls;

use crate::handler::Connection;
use crate::limits::{ClaimLimiter, SessionLimits};
use crate::sessions::Sessions;
use crate::socket::SshSocket;
use crate::startup::Startup;

/// What each channel may have in flight towards the broker. The window re-opens as the visitor
/// side consumes (vendor/russh), so this is also what one visitor who stops reading can hold
/// in the broker. 2 MiB, as OpenSSH's own: when the broker is the slower side (a 2-core box
/// with the client on it), the whole window sits in socket buffers and channel queues, and a
/// larger one only makes every copy of it colder. Same-run A/B, 4 × 512 MiB downloads: 1 MiB
/// 500 MB/s, 2 MiB 477, 4 MiB 459; ssh client 1.96 / 2.03 / 2.12 and broker 1.53 / 1.57 / 1.62
/// CPU-s per GiB. (With the old work-stealing layout 4 MiB had been the faster.) Over a real
/// link 2 MiB allows 40 MB/s per visitor connection at 50 ms, as sshd does.
const CHANNEL_WINDOW: u32 = 2 << 20;
/// Messages a channel's queue holds: a whole window of OpenSSH's 32 KiB packets, twice over, so
/// that only a peer sending small packets ever makes the session keep a backlog.
const CHANNEL_QUEUE: usize = 2 * (CHANNEL_WINDOW as usize / (32 << 10));
/// The authentication deadline of a connection accepted while at least three quarters of the
/// `ssh_max_startups` places are taken. OpenSSH logs in within a second or two (key exchange
/// and one signature); only a stranger holding connections idle needs the configured 30 s, and
/// with it a flood from many addresses would keep every place, and every new owner out, for
/// the whole deadline. Connections accepted under pressure are cut after this instead.
const PRESSED_AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// The SSH server's part of the broker configuration.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// How public URLs are written; its domain is the one names are bound under
    /// (`localhost` → `NAME.localhost`).
    pub urls: PublicUrls,
    /// Whether `-R NAME:80:…` may claim a free name for the requesting user.
    pub auto_claim: bool,
    /// Whether `-R NAME:443:…` (TLS passthrough) is offered: only with an HTTPS listener.
    pub tls_passthrough: bool,
    /// Server keepalive interval; a client that misses `keepalive_max` in a row is dropped.
    pub keepalive_interval: Duration,
    /// See `keepalive_interval`.
    pub keepalive_max: usize,
    /// A connection that has not authenticated by then is closed.
    pub auth_timeout: Duration,
    /// Bounds on forwards and claims per session and per user.
    pub limits: SessionLimits,
    /// Load balancers that start each connection with a PROXY protocol header naming the
    /// owner's address (`proxy_protocol_from`): limits and logs then see the owner.
    pub proxy_sources: warren_accept::ProxySources,
}

impl SshSettings {
    /// The public URL of HTTP name `name`, as printed to its owner.
    pub fn url_for(&self, name: &str) -> String {
        self.urls.url(RouteKind::Http, name)
    }
}

/// What every SSH connection shares.
pub struct SshServer {
    pub(crate) settings: SshSettings,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) tcp_ports: Option<Arc<dyn PortAllocator>>,
    /// Auto-claims per user per hour ([`SessionLimits::claims_per_hour`]).
    pub(crate) claims: ClaimLimiter,
    /// The service functions behind `ssh HOST COMMAND`; without them commands show the log.
    pub(crate) tenants: Option<warren_tenants::Tenants>,
    shards: Arc<Shards>,
    /// SSH connections, logins, refusals by reason, and the limits the SSH side enforces.
    pub(crate) metrics: Arc<Metrics>,
    config: Arc<Config>,
    next_id: AtomicU64,
    /// Stops accepting new connections while live sessions go on (see [`SshServer::with_drain`]).
    draining: CancellationToken,
    /// Which new connections are taken on (see [`SshServer::with_admission`]).
    pub(crate) admission: Arc<Admission>,
    /// Handshakes in progress from exempt sources (a load balancer, the box itself), which no
    /// limit refuses: beyond `ssh_max_startups` at once they wait their turn, first come first
    /// served (see [`SshServer::with_admission`]).
    exempt_turns: Arc<Semaphore>,
    /// Failed authentications per IP, and the addresses refused for too many (see
    /// [`SshServer::with_auth_failures`]).
    pub(crate) auth_failures: Arc<AuthFailures>,
    /// Refusals are logged at most once in a while, with the count since.
    refusals_logged: Throttle,
    /// This node among the brokers on the database: names are claimed cluster-wide through
    /// it before they are bound here (see [`SshServer::with_cluster`]).
    pub(crate) cluster: Option<Arc<warren_cluster::Membership>>,
}

impl std::fmt::Debug for SshServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshServer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SshServer {
    /// Builds the shared state with `host_key` as the server's identity.
    pub fn new(
        settings: SshSettings,
        host_key: PrivateKey,
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        sessions: Arc<Sessions>,
    ) -> Self {
        let config = Config {
            server_id: russh::SshId::Standard(
                format!("SSH-2.0-warren_{}", env!("CARGO_PKG_VERSION")).into(),
            ),
            // keyboard-interactive is offered only to tell a refused key why (see handler).
            methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::KeyboardInteractive][..]),
            auth_rejection_time: Duration::from_millis(100),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key],
            // russh's 600 s default would cut idle tunnels; liveness comes from keepalives.
            inactivity_timeout: None,
            keepalive_interval: Some(settings.keepalive_interval),
            keepalive_max: settings.keepalive_max,
            // Also set on each accepted socket in `run` (before the handshake); this is russh's
            // own copy of the setting.
            nodelay: true,
            window_size: CHANNEL_WINDOW,
            channel_buffer_size: CHANNEL_QUEUE,
            ..Config::default()
        };
        Self {
            claims: ClaimLimiter::new(settings.limits.claims_per_hour),
            settings,
            store,
            registry,
            sessions,
            tcp_ports: None,
            shards: Arc::new(Shards::inline()),
            config: Arc::new(config),
            next_id: AtomicU64::new(1),
            tenants: None,
            draining: CancellationToken::new(),
            metrics: Arc::new(Metrics::noop()),
            admission: Arc::new(Admission::unlimited()),
            exempt_turns: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            auth_failures: Arc::new(AuthFailures::off()),
            refusals_logged: Throttle::new(Duration::from_secs(10)),
            cluster: None,
        }
    }
}

impl SshServer {
    /// The public URL of a bound route, as printed to its owner when it binds and when it
    /// closes.
    pub(crate) fn public_url(&self, kind: RouteKind, name: &str) -> String {
        self.settings.urls.url(kind, name)
    }

    /// Enables raw TCP tunnels (`-R tcp:0:…`) on ports from `ports`.
    pub fn with_tcp_ports(mut self, ports: Arc<dyn PortAllocator>) -> Self {
        self.tcp_ports = Some(ports);
        self
    }

    /// Runs `ssh HOST COMMAND` through `tenants` (the same functions as the REST API).
    pub fn with_tenants(mut self, tenants: warren_tenants::Tenants) -> Self {
        self.tenants = Some(tenants);
        self
    }

    /// Claims every name through `cluster` before binding it, so that no two nodes on one
    /// database serve one name; without it the registry alone decides (a single node).
    pub fn with_cluster(mut self, cluster: Arc<warren_cluster::Membership>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Stops accepting new connections once `draining` fires, while live sessions (and the
    /// tunnels visitors' requests in flight run through) go on until [`run`]'s `shutdown`: the
    /// broker drains visitors between the two.
    pub fn with_drain(mut self, draining: CancellationToken) -> Self {
        self.draining = draining;
        self
    }

    /// Counts connections, logins, refusals and limit hits into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Limits connections that have not authenticated: per IP and in all (places given back at
    /// login), and new connections per IP per minute. Refused connections are closed at once,
    /// before any key exchange, with one line saying why.
    ///
    /// Exempt sources are never refused, but their handshakes wait for one of as many places
    /// as `admission` has pending ones: a reconnect storm through a load balancer (10,000
    /// owners at once from one exempt address) then runs that many key exchanges at a time, each
    /// finishing within seconds, instead of all of them at once, each slower than the auth
    /// deadline (measured: 10,122 auth timeouts and key lookups failing on a starved store
    /// pool, and most owners not back after 300 s; see ARCHITECTURE, "Reconnect storms").
    pub fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        let places = admission.pending().max().clamp(1, Semaphore::MAX_PERMITS);
        self.exempt_turns = Arc::new(Semaphore::new(places));
        self.admission = admission;
        self
    }

    /// Counts refused keys per IP into `failures`; an address past its limit is refused, at
    /// accept and at every further key, for the rest of its window.
    pub fn with_auth_failures(mut self, failures: Arc<AuthFailures>) -> Self {
        self.auth_failures = failures;
        self
    }

    /// Runs each session on one of `shards`' tunnel threads (in turn) instead of where it was
    /// accepted.
    pub fn with_shards(mut self, shards: Arc<Shards>) -> Self {
        self.shards = shards;
        self
    }
}

/// Serves SSH on `listener` until `shutdown` (or the server's drain token) is cancelled; live
/// sessions are disconnected, with the reason, when `shutdown` is.
pub async fn run(
    listener: TcpListener,
    shutdown: CancellationToken,
    server: Arc<SshServer>,
) -> std::io::Result<()> {
    let mut acceptor = warren_accept::Acceptor::new(listener, "ssh").with_proxy(
        server.settings.proxy_sources.clone(),
        server.metrics.proxy_headers_refused(None),
    );
    loop {
        let (socket, peer) = tokio::select! {
            _ = server.draining.cancelled() => return Ok(()),
            accepted = acceptor.next(&shutdown) => match accepted {
                Some(x) => x,
                None => return Ok(()),
            },
        };
        // First, so that an address refused for its failures does not spend its rate too.
        if let Some(wait) = server.auth_failures.blocked(peer.ip()) {
            server.refuse(
                socket,
                peer,
                Limit::SshAuthFailures,
                crate::penalty::message(wait),
            );
            continue;
        }
        let ticket = match server.admission.admit(peer.ip()) {
            Ok(ticket) => ticket,
            Err(why) => {
                let (limit, text) = refusal(why);
                server.refuse(socket, peer, limit, text);
                continue;
            }
        };
        let auth_deadline = if server.admission.pending().pressed() {
            server.settings.auth_timeout.min(PRESSED_AUTH_DEADLINE)
        } else {
            server.settings.auth_timeout
        };
        // TCP_NODELAY is set by the acceptor: OpenSSH sets it only for sessions with a pty;
        // without it on our side too, every `ssh -N` tunnel pays a Nagle + delayed-ACK stall
        // per small write.
        server.metrics.ssh_connections.increment(1);
        let id = server.next_id.fetch_add(1, Ordering::Relaxed);
        let server = server.clone();
        let shutdown = shutdown.clone();
        let span = info_span!("ssh", session = id, %peer);
        let shards = server.shards.clone();
        shards.hand_off(None, socket, move |socket| {
            async move {
                // An exempt source waits for its turn before its handshake (and its deadline)
                // starts; the others were counted, and refused at the cap, when accepted.
                let turn = if ticket.exempt() {
                    tokio::select! {
                        turn = server.exempt_turns.clone().acquire_owned() => turn.ok(),
                        _ = shutdown.cancelled() => return,
                    }
                } else {
                    None
                };
                let startup = Arc::new(Startup::new(ticket).with_turn(turn));
                let handler = Connection::new(server.clone(), id, peer, startup.clone());
                let socket = SshSocket::new(
                    socket,
                    startup,
                    auth_deadline,
                    server.metrics.limit_counter(Limit::AuthTimeout),
                );
                let session =
                    match russh::server::run_stream(server.config.clone(), socket, handler).await {
                        Ok(s) => s,
                        Err(e) => {
                            debug!(error = %e, "ssh handshake failed");
                            return;
                        }
                    };
                let handle = session.handle();
                tokio::select! {
                    result = session => {
                        if let Err(e) = result {
                            debug!(error = %e, "ssh session ended");
                        }
                    }
                    _ = shutdown.cancelled() => {
                        let _ = handle.disconnect(russh::Disconnect::ByApplication,
                            "the broker is shutting down".into(), String::new()).await;
                    }
                }
            }
            .instrument(span)
        });
    }
}

impl SshServer {
    /// Closes a connection a limit refused: counted, logged now and then, and told why in one
    /// line before the version exchange (RFC 4253 4.2 lets a server send lines before its
    /// version; OpenSSH shows them with `-v`, then reports the closed connection). One
    /// non-blocking write into an empty send buffer, no task, no key exchange: a flood of
    /// refused connections costs an accept, a write and a close each.
    fn refuse(
        &self,
        socket: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        limit: Limit,
        text: String,
    ) {
        self.metrics.limit_hit(limit);
        if let Some(quiet) = self.refusals_logged.hit() {
            warn!(%peer, limit = limit.as_str(), refused_since_last_line = quiet, "ssh connection refused");
        }
        let _ = socket.try_write(format!("Warren: {text}\r\n").as_bytes());
        // Whatever the client already sent is read away so that the close is a FIN, not a
        // reset that could discard the line before the client reads it.
        let mut sink = [0u8; 512];
        let _ = socket.try_read(&mut sink);
    }
}

/// The limit that refused a connection at admission, and what its client is told.
fn refusal(why: Refusal) -> (Limit, String) {
    match why {
        Refusal::PerIp => (
            Limit::SshStartupsPerIp,
            "too many unauthenticated connections from your address (ssh_max_startups_per_ip); try again later"
                .to_owned(),
        ),
        Refusal::Pending => (
            Limit::SshStartups,
            "too many unauthenticated connections (ssh_max_startups); try again later".to_owned(),
        ),
        Refusal::Rate(wait) => (
            Limit::SshConnectionRate,
            format!(
                "too many new connections from your address (ssh_connections_per_minute_per_ip); try again in {} s",
                wait.as_secs().max(1)
            ),
        ),
    }
}

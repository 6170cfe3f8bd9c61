//! Raw TCP tunnels: one public port per tunnel, from a configured range.
//!
//! A listener is opened when the SSH side allocates a port and stays open while the route
//! `tcp:PORT` is live or parked (so a reconnecting owner keeps the port); once the registry
//! forgets the route, the listener closes and the port returns to the pool.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};
use warren_accept::Acceptor;
use warren_admit::Admission;
use warren_metrics::{Limit, Listener, Metrics};
use warren_registry::{Lookup, PacedIo, PortAllocator, Registry, RouteKind, tcp_name};
use warren_shards::Shards;

/// How often an idle listener checks whether its route is gone.
const REAP: Duration = Duration::from_secs(2);

/// The TCP port pool and its listeners.
pub struct TcpPorts {
    bind_ip: IpAddr,
    range: RangeInclusive<u16>,
    public_host: String,
    registry: Arc<Registry>,
    open: Arc<Mutex<HashSet<u16>>>,
    shutdown: CancellationToken,
    shards: Arc<Shards>,
    metrics: Arc<Metrics>,
    admission: Arc<Admission>,
    proxy_sources: warren_accept::ProxySources,
}

impl std::fmt::Debug for TcpPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpPorts")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl TcpPorts {
    /// A pool of ports `range` on `bind_ip`, printed as `tcp://public_host:PORT`. Listeners
    /// close when `shutdown` is cancelled.
    pub fn new(
        bind_ip: IpAddr,
        range: RangeInclusive<u16>,
        public_host: String,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            bind_ip,
            range,
            public_host,
            registry,
            open: Arc::default(),
            shutdown,
            shards: Arc::new(Shards::inline()),
            metrics: Arc::new(Metrics::noop()),
            admission: Arc::new(Admission::unlimited()),
            proxy_sources: warren_accept::ProxySources::default(),
        }
    }

    /// Connections from `sources` start with a PROXY protocol header naming the visitor (see
    /// `warren-accept`).
    pub fn with_proxy_sources(mut self, sources: warren_accept::ProxySources) -> Self {
        self.proxy_sources = sources;
        self
    }

    /// Limits connections per IP at once and per second (the edge's [`Admission`], so one
    /// IP's count spans every listener). A raw TCP connection has no head to wait for: it
    /// never counts as pending. Refused connections are closed at once.
    pub fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = admission;
        self
    }

    /// Counts connections and connection-limit hits into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Serves each connection on its tunnel's thread (see `warren-shards`).
    pub fn with_shards(mut self, shards: Arc<Shards>) -> Self {
        self.shards = shards;
        self
    }

    fn listen(&self, port: u16) -> std::io::Result<()> {
        let std_listener = std::net::TcpListener::bind(SocketAddr::new(self.bind_ip, port))?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port);
        let registry = self.registry.clone();
        let open = self.open.clone();
        let shutdown = self.shutdown.clone();
        let shards = self.shards.clone();
        let metrics = self.metrics.clone();
        let admission = self.admission.clone();
        let acceptor = Acceptor::new(listener, "tcp").with_proxy(
            self.proxy_sources.clone(),
            metrics.proxy_headers_refused(Some(Listener::Tcp)),
        );
        tokio::spawn(
            async move {
                accept_loop(
                    acceptor, port, registry, shutdown, shards, metrics, admission,
                )
                .await;
                open.lock().unwrap_or_else(|p| p.into_inner()).remove(&port);
                debug!("tcp port closed");
            }
            .instrument(info_span!("tcp", port)),
        );
        Ok(())
    }
}

impl PortAllocator for TcpPorts {
    fn allocate(&self, preferred: Option<u16>) -> Result<u16, String> {
        if let Some(port) = preferred {
            if !self.range.contains(&port) {
                return Err(format!(
                    "port {port} is outside this broker's TCP range {}-{}",
                    self.range.start(),
                    self.range.end()
                ));
            }
            if self
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&port)
            {
                // Still listening for its (parked) route; the registry decides who may bind it.
                return Ok(port);
            }
            return self
                .listen(port)
                .map(|()| port)
                .map_err(|e| format!("port {port} is not available: {e}"));
        }
        let span = (*self.range.end() - *self.range.start()) as u32 + 1;
        let offset = rand::random::<u32>() % span;
        for i in 0..span {
            let port = *self.range.start() + ((offset + i) % span) as u16;
            if self
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&port)
            {
                continue;
            }
            if self.listen(port).is_ok() {
                return Ok(port);
            }
        }
        Err("no free TCP port left in this broker's range".into())
    }

    fn public_host(&self) -> String {
        self.public_host.clone()
    }
}

async fn accept_loop(
    mut acceptor: Acceptor,
    port: u16,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    shards: Arc<Shards>,
    metrics: Arc<Metrics>,
    admission: Arc<Admission>,
) {
    let name = tcp_name(port);
    let refusals_logged = warren_admit::Throttle::new(Duration::from_secs(10));
    let mut reap = tokio::time::interval(REAP);
    reap.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reap.tick() => {
                if matches!(registry.lookup(&name), Lookup::Unknown | Lookup::Offline) {
                    return;
                }
            }
            accepted = acceptor.next(&shutdown) => {
                let Some((socket, peer)) = accepted else { return };
                metrics.visitor_connection(Listener::Tcp);
                let mut ticket = match admission.admit(peer.ip()) {
                    Ok(ticket) => ticket,
                    Err(why) => {
                        crate::admit::count(&metrics, &refusals_logged, peer, why);
                        continue;
                    }
                };
                ticket.identified();
                let Lookup::Live(route) = registry.lookup(&name) else { continue };
                if route.kind != RouteKind::Tcp {
                    continue;
                }
                if let Some(policy) = registry.policy_for(&route)
                    && !crate::access::admits_stream(&route, &policy, peer)
                {
                    continue;
                }
                let shard = route.endpoint.shard();
                let metrics = metrics.clone();
                let (route_owner, route_name) = (route.owner, route.name.clone());
                shards.hand_off(shard, socket, move |mut socket| async move {
                    let _ticket = ticket;
                    let Some(_permit) = route.take_slot() else {
                        metrics.limit_hit(Limit::TunnelConnections);
                        return;
                    };
                    let started = std::time::Instant::now();
                    match route.endpoint.open(peer).await {
                        Ok(mut upstream) => {
                            route.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let mut visitor = PacedIo::visitor(&mut socket, &route);
                            let _ = tokio::io::copy_bidirectional(&mut visitor, &mut upstream).await;
                            let (up, down) = (visitor.read, visitor.written);
                            route.endpoint.notify(format!("TCP {peer} {}s {up}B up {down}B down", started.elapsed().as_secs()));
                        }
                        Err(e) => route.endpoint.notify(format!("TCP connection from {peer} failed: {e}")),
                    }
                }.instrument(info_span!("tcp visitor", %peer, tenant = route_owner, tunnel = %route_name, visitor = %peer.ip())));
            }
        }
    }
}

//! What the operator on the box asks a running broker: `/metrics` (Prometheus text),
//! `/healthz` (the process serves) and `/readyz` (the database answers and every listener is
//! accepting). Served on the admin listener only, beside the API: never on the console host
//! through the edge, where any visitor could read them.
//!
//! Counters are bumped where things happen, through `warren-metrics` handles. Gauges that
//! describe state (live tunnels, sessions, visitor connections, certificates) and the byte
//! totals are read from the state itself when scraped: nothing on the visitor path keeps
//! them, and they cannot drift from what the registry and the certificate store hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use warren_metrics::{Metrics, REQUEST_DURATION, REQUEST_DURATION_BUCKETS, ROUTE_KINDS};
use warren_registry::Registry;
use warren_ssh::Sessions;
use warren_store::Store;
use warren_tls::CertStore;

/// How long `/readyz` waits for the database before it says it is not ready.
const STORE_DEADLINE: Duration = Duration::from_secs(2);

/// How often histogram samples are folded into their buckets when nobody scrapes: the
/// recorder buffers each sample until then, so without it an unscraped broker would keep
/// every request's latency.
const UPKEEP: Duration = Duration::from_secs(5);

/// The metrics handles for every part of the broker, and the Prometheus recorder they count
/// into (not installed as the process's global recorder: the handles are passed in).
pub fn recorder() -> Result<(Arc<Metrics>, PrometheusHandle)> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION.to_owned()),
            REQUEST_DURATION_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    Ok((Arc::new(Metrics::new(Arc::new(recorder))), handle))
}

/// Folds histogram samples into buckets every few seconds until `shutdown`.
pub async fn upkeep(handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Which listeners are accepting: each is marked up when its accept loop starts and down
/// when it returns (shut down, or failed).
#[derive(Debug, Default)]
pub struct Listeners {
    up: Mutex<Vec<(&'static str, Arc<AtomicBool>)>>,
}

impl Listeners {
    /// Runs `serve` (an accept loop) as listener `name`, up while it runs.
    pub fn watch<F: std::future::Future + Send + 'static>(
        &self,
        name: &'static str,
        serve: F,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let flag = Arc::new(AtomicBool::new(true));
        self.up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, flag.clone()));
        async move {
            let _ = serve.await;
            flag.store(false, Ordering::Relaxed);
        }
    }

    /// The first listener that is not accepting, if any.
    fn down(&self) -> Option<&'static str> {
        self.up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, up)| !up.load(Ordering::Relaxed))
            .map(|(name, _)| *name)
    }
}

/// What the admin routes read.
pub struct Observer {
    pub handle: PrometheusHandle,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub sessions: Arc<Sessions>,
    pub certs: Arc<CertStore>,
    pub store: Arc<dyn Store>,
    pub listeners: Arc<Listeners>,
    /// A SQLite database's file: it must still be there (see [`Observer::database`]).
    pub sqlite_file: Option<std::path::PathBuf>,
    /// The console's route, which is not a tenant's tunnel.
    pub console_owner: i64,
    /// Cancelled when SIGTERM starts the drain: from then on the broker is not ready, so a
    /// load balancer sends new visitors elsewhere while those in flight finish.
    pub draining: tokio_util::sync::CancellationToken,
}

/// `/metrics`, `/healthz` and `/readyz`, for the admin listener.
pub fn router(observer: Arc<Observer>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(observer)
}

async fn metrics(State(o): State<Arc<Observer>>) -> Response {
    set_gauges(
        &o.metrics,
        &o.registry,
        &o.sessions,
        &o.certs,
        o.console_owner,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        o.handle.render(),
    )
        .into_response()
}

async fn readyz(State(o): State<Arc<Observer>>) -> Response {
    let why = if o.draining.is_cancelled() {
        Some("shutting down: draining the requests in flight".to_owned())
    } else if let Err(why) = o.database().await {
        Some(why)
    } else {
        o.listeners
            .down()
            .map(|l| format!("the {l} listener is not accepting"))
    };
    match why {
        None => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

impl Observer {
    /// Whether the database answers a trivial query in time. A SQLite file that is gone
    /// (deleted, moved) still answers through the connections open on it, but everything
    /// written from then on is lost at the next start: that is not ready either.
    async fn database(&self) -> Result<(), String> {
        if let Some(path) = &self.sqlite_file
            && let Err(e) = std::fs::metadata(path)
        {
            return Err(format!("database file {}: {e}", path.display()));
        }
        match tokio::time::timeout(STORE_DEADLINE, self.store.last_event_id()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("database: {e}")),
            Err(_) => Err(format!(
                "database: no answer within {} s",
                STORE_DEADLINE.as_secs()
            )),
        }
    }
}

/// Sets the gauges (and byte totals) read from state, just before rendering. The console's
/// route (`console_owner`) is not a tenant's tunnel.
fn set_gauges(
    m: &Metrics,
    registry: &Registry,
    sessions: &Sessions,
    certs: &CertStore,
    console_owner: i64,
) {
    let mut tunnels = [0u64; ROUTE_KINDS.len()];
    let mut visitors = 0usize;
    for route in registry.routes() {
        visitors += route.stats().connections;
        if route.owner == console_owner {
            continue;
        }
        if let Some(i) = ROUTE_KINDS.iter().position(|k| *k == route.kind.as_str()) {
            tunnels[i] += 1;
        }
    }
    for (gauge, n) in m.tunnels_live.iter().zip(tunnels) {
        gauge.set(n as f64);
    }
    m.visitor_connections_live.set(visitors as f64);
    m.sessions_live.set(sessions.len() as f64);
    let (bytes_in, bytes_out) = registry.bytes_moved();
    // `absolute` keeps the highest value seen: a route unbound mid-download is briefly
    // in neither part of the registry's total, and a counter must not go down.
    m.bytes_in.absolute(bytes_in);
    m.bytes_out.absolute(bytes_out);
    // Throttling episodes are counted by the tunnels' buckets (no metrics handle on that
    // path) and read here.
    m.limit_counter(warren_metrics::Limit::TunnelBandwidth)
        .absolute(registry.throttle_episodes());
    let expiries: Vec<i64> = certs
        .names()
        .iter()
        .filter_map(|name| certs.get_exact(name))
        .filter_map(|key| {
            let leaf = key.cert.first()?;
            warren_tls::cert_info_der(leaf).ok().map(|i| i.not_after)
        })
        .collect();
    m.certificates.set(expiries.len() as f64);
    m.certificate_expiry
        .set(expiries.iter().min().copied().unwrap_or(0) as f64);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use metrics::{Key, Label, Level, Metadata, Recorder};

    use super::*;

    /// What counting a request costs through the handles, against looking a counter up by
    /// name and label for each request, on the Prometheus recorder the broker uses:
    /// `cargo test --release -p warren-broker --bin broker request_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn request_cost() {
        let (m, handle) = recorder().expect("recorder");
        let n = 2_000_000u32;
        let started = Instant::now();
        for i in 0..n {
            m.request(200, Duration::from_micros(u64::from(i % 5000)));
            if i % 100_000 == 0 {
                handle.run_upkeep();
            }
        }
        let handles = started.elapsed().as_nanos() / u128::from(n);
        let lookup = PrometheusBuilder::new().build_recorder();
        let meta = Metadata::new("warren", Level::INFO, None);
        let started = Instant::now();
        for _ in 0..n {
            let key = Key::from_parts(
                "warren_http_requests_total",
                vec![Label::new("class", "2xx")],
            );
            lookup.register_counter(&key, &meta).increment(1);
        }
        let keyed = started.elapsed().as_nanos() / u128::from(n);
        println!(
            "a request counted through handles (counter + histogram): {handles} ns; \
             the counter alone looked up by name and label: {keyed} ns"
        );
    }

    #[test]
    fn scrape_shows_live_tunnels_and_bytes_of_gone_ones() {
        let (m, handle) = recorder().expect("recorder");
        let registry = Arc::new(Registry::new(Duration::from_secs(60), 4));
        #[derive(Debug)]
        struct Nowhere;
        #[async_trait::async_trait]
        impl warren_registry::Endpoint for Nowhere {
            async fn open(
                &self,
                _: std::net::SocketAddr,
            ) -> Result<warren_registry::BoxStream, warren_registry::OpenError> {
                Err(warren_registry::OpenError::Unreachable("nowhere".into()))
            }
            fn notify(&self, _: String) {}
            fn describe(&self) -> String {
                String::new()
            }
        }
        let (tcp, _) = registry
            .bind(
                "tcp:40000",
                1,
                1,
                warren_registry::RouteKind::Tcp,
                Arc::new(Nowhere),
            )
            .expect("bind");
        tcp.count_bytes(7, 9);
        drop(tcp);
        registry.unbind("tcp:40000", 1);
        registry
            .bind(
                "a",
                1,
                2,
                warren_registry::RouteKind::Http,
                Arc::new(Nowhere),
            )
            .expect("bind");
        registry
            .bind(
                "console",
                0,
                0,
                warren_registry::RouteKind::Http,
                Arc::new(Nowhere),
            )
            .expect("bind");
        set_gauges(&m, &registry, &Sessions::default(), &CertStore::new(), 0);
        let text = handle.render();
        for line in [
            "warren_tunnels_live{kind=\"http\"} 1",
            "warren_tunnels_live{kind=\"tcp\"} 0",
            "warren_visitor_bytes_total{direction=\"in\"} 7",
            "warren_visitor_bytes_total{direction=\"out\"} 9",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }
}

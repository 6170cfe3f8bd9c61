//! Times the route table at the size the broker is sized for: 10,000 live tunnels.
//!
//! `cargo run --release -p warren-registry --example table_bench [ROUTES [ROUNDS]]` prints, per
//! operation, the median of the rounds (7 by default):
//! - `rebind`: unbind one route and bind it again (an owner's reconnect), µs per pair;
//! - `storm`: every route unbound, then every route bound again (all owners reconnecting), ms;
//! - `lookup`: a visitor's lookup of a live name, ns.
//!
//! It uses only the public API, so the same file builds against an older table: that is how
//! docs/ARCHITECTURE.md's figures compare the two in one run.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_registry::{BoxStream, Endpoint, Lookup, OpenError, Registry, RouteKind};

struct Nowhere;

#[async_trait::async_trait]
impl Endpoint for Nowhere {
    async fn open(&self, _: SocketAddr) -> Result<BoxStream, OpenError> {
        Err(OpenError::Unreachable("bench".into()))
    }
    fn notify(&self, _: String) {}
    fn describe(&self) -> String {
        "bench".into()
    }
}

/// A name shaped like a random tunnel name (`brave-otter-1234`).
fn name(i: usize) -> String {
    format!("brave-otter-{i}")
}

/// A cheap deterministic sequence of indexes, so rounds touch routes all over the table.
fn scatter(i: usize, n: usize) -> usize {
    i.wrapping_mul(7919) % n
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (routes, rounds) = (arg(1, 10_000), arg(2, 7));
    let reg = Registry::new(Duration::from_secs(60), 16).with_request_log(0);
    let endpoint: Arc<dyn Endpoint> = Arc::new(Nowhere);
    let mut session = vec![0u64; routes];
    let mut next_session = 1u64;
    for (i, s) in session.iter_mut().enumerate() {
        *s = next_session;
        next_session += 1;
        reg.bind(
            &name(i),
            i as i64 + 1,
            *s,
            RouteKind::Http,
            endpoint.clone(),
        )
        .expect("bind");
    }

    let (mut rebind, mut storm, mut lookup) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // One owner at a time reconnecting.
        let pairs = 500;
        let start = Instant::now();
        for k in 0..pairs {
            let i = scatter(round * pairs + k, routes);
            assert!(reg.unbind(&name(i), session[i]));
            session[i] = next_session;
            next_session += 1;
            reg.bind(
                &name(i),
                i as i64 + 1,
                session[i],
                RouteKind::Http,
                endpoint.clone(),
            )
            .expect("rebind");
        }
        rebind.push(start.elapsed().as_secs_f64() * 1e6 / pairs as f64);

        // Every owner reconnecting (the broker restarted, or the network blinked).
        let start = Instant::now();
        for (i, s) in session.iter().enumerate() {
            reg.unbind(&name(i), *s);
        }
        for (i, s) in session.iter_mut().enumerate() {
            *s = next_session;
            next_session += 1;
            reg.bind(
                &name(i),
                i as i64 + 1,
                *s,
                RouteKind::Http,
                endpoint.clone(),
            )
            .expect("storm bind");
        }
        storm.push(start.elapsed().as_secs_f64() * 1e3);

        // Visitors.
        let names: Vec<String> = (0..routes).map(|i| name(scatter(i, routes))).collect();
        let lookups = 1_000_000;
        let start = Instant::now();
        let mut live = 0usize;
        for k in 0..lookups {
            if matches!(reg.lookup(&names[k % routes]), Lookup::Live(_)) {
                live += 1;
            }
        }
        assert_eq!(live, lookups);
        lookup.push(start.elapsed().as_secs_f64() * 1e9 / lookups as f64);
    }
    println!(
        "routes={routes} rebind_us={:.2} storm_ms={:.1} lookup_ns={:.1}",
        median(rebind),
        median(storm),
        median(lookup)
    );
}

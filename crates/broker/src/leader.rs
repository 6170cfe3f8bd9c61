//! Work one node of a cluster does for all: ordering and renewing certificates, driving a
//! remote DNS provider (Cloudflare, RFC 2136), and queueing and sending webhook alerts, by
//! whichever node holds the ACME lease (a
//! Postgres advisory lock on a connection of its own: it goes with the node's process or its
//! database connection, and another node takes it within one tick). Every node answers the
//! CA's HTTP-01 and TLS-ALPN-01 challenges, from answers the ordering node publishes in the
//! store ([`mirror_challenges`]), because the CA may reach any of them.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use warren_store::{HoldEvents, Job, Lease, Store};
use warren_tls::Challenges;

use crate::public::Public;

/// Holds the ACME lease when it can, and tells `public` and `alerting` (webhook alerts and
/// their deliveries: `warren_alerts::Leading`) whether this node leads; checks every `every`
/// that the lease is still held (or tries to take it).
pub async fn run(
    store: Arc<dyn Store>,
    public: Arc<Public>,
    alerting: Arc<AtomicBool>,
    metrics: Arc<warren_metrics::Metrics>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut lease: Option<Box<dyn Lease>> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match &mut lease {
            Some(held) => {
                if !held.held().await {
                    lease = None;
                    public.set_leading(false);
                    alerting.store(false, Ordering::Relaxed);
                    metrics.cluster_acme_leader.set(0.0);
                    warn!(
                        "lost the cluster's ACME lease (its database connection failed); another node may take it"
                    );
                }
            }
            None => match store.lead(Job::Acme).await {
                Ok(Some(held)) => {
                    lease = Some(held);
                    public.set_leading(true);
                    alerting.store(true, Ordering::Relaxed);
                    metrics.cluster_acme_leader.set(1.0);
                    info!(
                        "this node orders certificates (and drives the DNS provider) and sends webhook alerts for the cluster"
                    );
                }
                Ok(None) => {}
                Err(e) => debug!(error = %e, "cannot ask for the ACME lease"),
            },
        }
    }
    if lease.is_some() {
        public.set_leading(false);
        alerting.store(false, Ordering::Relaxed);
    }
}

/// Keeps `challenges` answering what the ordering node published, whichever node that is.
pub async fn mirror_challenges(
    store: Arc<dyn Store>,
    challenges: Arc<Challenges>,
    shutdown: CancellationToken,
) {
    let mut events: Option<Box<dyn HoldEvents>> = None;
    let mut applied: HashSet<(String, String, String)> = HashSet::new();
    loop {
        if events.is_none() {
            match store.challenge_events().await {
                Ok(Some(e)) => events = Some(e),
                Ok(None) => return,
                Err(e) => {
                    warn!(error = %e, "cannot listen for published challenge answers; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
            apply(&*store, &challenges, &mut applied).await;
        }
        let Some(listening) = events.as_mut() else {
            continue;
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = listening.next() => match event {
                Ok(_) => apply(&*store, &challenges, &mut applied).await,
                Err(e) => {
                    warn!(error = %e, "lost the notifications of challenge answers; reconnecting");
                    events = None;
                }
            },
        }
    }
}

/// Makes the answers this task put up match the store's.
async fn apply(
    store: &dyn Store,
    challenges: &Challenges,
    applied: &mut HashSet<(String, String, String)>,
) {
    let rows: HashSet<(String, String, String)> = match store.list_challenges().await {
        Ok(rows) => rows.into_iter().collect(),
        Err(e) => {
            warn!(error = %e, "cannot read the published challenge answers");
            return;
        }
    };
    for (kind, key, value) in rows.difference(applied) {
        match kind.as_str() {
            "http-01" => challenges.add_http01(key, value),
            "tls-alpn-01" => match unhex(value) {
                Some(digest) => {
                    if let Err(e) = challenges.add_tls_alpn01(key, &digest) {
                        warn!(domain = %key, error = %e, "cannot answer a TLS-ALPN-01 challenge");
                    }
                }
                None => warn!(domain = %key, "a published TLS-ALPN-01 answer is not hex"),
            },
            other => debug!(kind = %other, "unknown challenge kind"),
        }
    }
    for (kind, key, _) in applied.difference(&rows) {
        match kind.as_str() {
            "http-01" => challenges.remove_http01(key),
            "tls-alpn-01" => challenges.remove_tls_alpn01(key),
            _ => {}
        }
    }
    *applied = rows;
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

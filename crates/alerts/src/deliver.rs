//! The delivery task: sends queued deliveries, retries failures with exponential backoff and
//! full jitter, gives up after `webhook_max_attempts`.
//!
//! The queue is the `webhook_deliveries` table, so a restart resumes where it stopped and a
//! test ping queued by the CLI (another process) is sent like any event. The task polls it
//! twice a second (an indexed `SELECT` of due rows) and is woken at once when the alerts task
//! queues something. Attempts run in their own tasks, at most `concurrency` at a time, each
//! bounded by the timeout: a receiver that hangs or is down holds one slot for ten seconds,
//! never the watcher, the SSH server or the edge.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use warren_metrics::Metrics;
use warren_store::{DeliveryAttempt, Store, WebhookDelivery, now_ms};

use crate::{AlertsError, Leading, Settings, guard, sign};

/// How often due deliveries are looked for when nothing wakes the task.
const POLL: Duration = Duration::from_millis(500);
/// How often finished deliveries are pruned.
const PRUNE: Duration = Duration::from_secs(3600);

/// The delivery task's state.
pub struct Deliverer {
    store: Arc<dyn Store>,
    settings: Arc<Settings>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    /// Deliveries being attempted right now: the next poll must not start them twice. A std
    /// mutex, never held across an `.await`.
    in_flight: Arc<Mutex<HashSet<i64>>>,
    /// Whether this node works the queue ([`Deliverer::while_leading`]).
    leading: Leading,
}

impl Deliverer {
    /// A delivery task over `store`, woken by `wake`.
    pub fn new(
        store: Arc<dyn Store>,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Result<Self, AlertsError> {
        Ok(Self {
            client: http_client(&settings)?,
            store,
            settings,
            metrics,
            wake,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            leading: Leading::always(),
        })
    }

    /// Works the queue only while `leading` says this node alerts for the cluster: every node
    /// of a cluster reads the same queue, and each row must be sent once.
    pub fn while_leading(mut self, leading: Leading) -> Self {
        self.leading = leading;
        self
    }

    /// Sends deliveries until `shutdown`; attempts in flight then finish within their timeout
    /// (or are retried after the next start).
    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let tasks = TaskTracker::new();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(PRUNE);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
                _ = prune.tick() => {
                    if self.leading.now() {
                        self.prune().await;
                    }
                }
            }
            if !self.leading.now() {
                continue;
            }
            let due = match self
                .store
                .due_deliveries(now_ms(), self.settings.concurrency.max(1) as i64 * 4)
                .await
            {
                Ok(due) => due,
                Err(e) => {
                    warn!(error = %e, "cannot read the webhook queue; retrying");
                    continue;
                }
            };
            for d in due {
                if !self.lock().insert(d.id) {
                    continue;
                }
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    self.lock().remove(&d.id);
                    break;
                };
                let attempt = Attempt {
                    store: self.store.clone(),
                    settings: self.settings.clone(),
                    client: self.client.clone(),
                    metrics: self.metrics.clone(),
                };
                let in_flight = self.in_flight.clone();
                let span = tracing::info_span!("webhook", delivery = d.id, hook = d.webhook_id);
                tasks.spawn(tracing::Instrument::instrument(
                    async move {
                        let id = d.id;
                        attempt.run(d).await;
                        in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                        drop(permit);
                    },
                    span,
                ));
            }
        }
        tasks.close();
        let _ = tokio::time::timeout(self.settings.timeout, tasks.wait()).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn prune(&self) {
        let before = warren_store::now() - self.settings.keep_for.as_secs() as i64;
        match self
            .store
            .prune_deliveries(before, self.settings.keep_per_hook)
            .await
        {
            Ok(0) => {}
            Ok(n) => debug!(rows = n, "pruned webhook deliveries"),
            Err(e) => warn!(error = %e, "cannot prune webhook deliveries"),
        }
    }
}

/// What one attempt needs.
struct Attempt {
    store: Arc<dyn Store>,
    settings: Arc<Settings>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Attempt {
    async fn run(self, d: WebhookDelivery) {
        let hook = match self.store.webhook(d.webhook_id).await {
            Ok(Some(h)) => h,
            // Deleted meanwhile: its deliveries went with it.
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "cannot read the webhook; retrying");
                return;
            }
        };
        let (status, error) = self.send(&hook.url, &hook.secret, &d).await;
        let attempts = d.attempts + 1;
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let (state, next) = if ok {
            self.metrics.webhook_delivered.increment(1);
            ("delivered", 0)
        } else if attempts >= i64::from(self.settings.max_attempts) {
            self.metrics.webhook_given_up.increment(1);
            ("failed", 0)
        } else {
            self.metrics.webhook_failed.increment(1);
            let wait = backoff(self.settings.backoff, self.settings.backoff_cap, attempts);
            ("pending", now_ms() + wait.as_millis() as i64)
        };
        let error = match (ok, error, status) {
            (true, _, _) => None,
            (false, Some(e), _) => Some(e),
            (false, None, Some(s)) => Some(format!("the receiver answered {s}")),
            (false, None, None) => Some("no answer".into()),
        };
        match state {
            "delivered" => debug!(attempts, "webhook delivered"),
            "failed" => {
                warn!(attempts, error = ?error, url = %warren_store::redact_url(&hook.url), "webhook delivery given up")
            }
            _ => info!(attempts, error = ?error, "webhook delivery failed; will retry"),
        }
        let outcome = DeliveryAttempt {
            at: warren_store::now(),
            status: status.map(i64::from),
            error,
            state: state.into(),
            next_attempt_ms: next,
        };
        if let Err(e) = self.store.record_attempt(d.id, &outcome).await {
            warn!(error = %e, "cannot record a webhook attempt");
        }
    }

    /// One POST: the receiver's status, or why there was none.
    async fn send(
        &self,
        url: &str,
        secret: &str,
        d: &WebhookDelivery,
    ) -> (Option<u16>, Option<String>) {
        let url = match guard::parse(url) {
            Ok(u) => u,
            Err(e) => return (None, Some(e.to_string())),
        };
        // Address literals skip the resolver: check them here.
        if let Some(ip) = guard::literal(&url)
            && !self.settings.allow_private
            && !guard::is_public(ip)
        {
            let e = guard::UrlError::Private {
                host: ip.to_string(),
                addr: ip,
            };
            return (None, Some(e.to_string()));
        }
        let timestamp = warren_store::now();
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-warren-event", &d.event)
            .header("x-warren-delivery", d.id.to_string())
            .header("x-warren-timestamp", timestamp.to_string())
            .header(
                "x-warren-signature",
                sign::signature(secret, timestamp, &d.body),
            )
            .body(d.body.clone())
            .send()
            .await;
        match resp {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (None, Some(error_chain(&e))),
        }
    }
}

/// The wait before retry number `attempts` (1 after the first failure): a random duration up
/// to `base * 2^(attempts-1)`, capped (exponential backoff with full jitter). The jitter
/// spreads the retries of many hooks that failed together (a receiver's outage) instead of
/// bringing them back at once.
pub fn backoff(base: Duration, cap: Duration, attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(cap);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// reqwest with rustls on ring and the system's roots (as warren-dns), the guarded resolver,
/// no redirects, no proxy from the environment, and the attempt timeout.
fn http_client(settings: &Settings) -> Result<reqwest::Client, AlertsError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| AlertsError::Client(e.to_string()))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .dns_resolver(guard::GuardedResolver {
            allow_private: settings.allow_private,
        })
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(settings.timeout)
        .timeout(settings.timeout)
        .user_agent(concat!("warren-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| AlertsError::Client(e.to_string()))
}

/// reqwest's top-level message is often just "error sending request": add the causes.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_secs(10);
        let cap = Duration::from_secs(3600);
        for attempts in 1..40 {
            let ceiling = base.saturating_mul(1u32 << (attempts - 1).min(30)).min(cap);
            for _ in 0..20 {
                assert!(backoff(base, cap, attempts as i64) <= ceiling);
            }
        }
        // Full jitter: not always the ceiling.
        let waits: HashSet<Duration> = (0..50).map(|_| backoff(base, cap, 5)).collect();
        assert!(waits.len() > 1);
    }
}

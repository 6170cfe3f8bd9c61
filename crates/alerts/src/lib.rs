//! Tunnel alerts over webhooks: what replaces the cron job that mailed someone when a
//! hand-built tunnel dropped.
//!
//! The broker's watcher tails the audit log and hands this crate [`Signal`]s through a
//! bounded channel (it never waits on it: a full channel drops the signal with a warning).
//! The alerts task ([`Alerts::run`]) passes tunnel binds and unbinds through the flap damper
//! ([`damper`]), turns what survives into `tunnel.up` / `tunnel.down` events, checks
//! certificates for coming expiry and failed orders, and queues one delivery per event and
//! webhook in the store. The delivery task ([`deliver`]) sends them, signed ([`sign`]), with
//! retries, through a client that refuses private addresses ([`guard`]).
//!
//! Who gets what: a tenant's hooks get their own tunnels' events; global hooks (the
//! operator's) get every tunnel's events and the broker's own (`cert.expiring`, `cert.error`,
//! `dns.error`).
#![warn(missing_docs)]

pub mod damper;
pub mod deliver;
pub mod event;
pub mod guard;
pub mod sign;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use warren_store::{Certificate, Store, Webhook, WebhookFilter};

pub use damper::{Damper, OnBind};
pub use deliver::Deliverer;
pub use event::{Alert, EventKind, Tunnel};
pub use guard::{UrlError, is_public};
pub use sign::{SECRET_PREFIX, generate_secret, signature, verify};

/// Signals the watcher can queue before one is dropped. A reconnect storm of 10,000 tunnels
/// is 10,000 binds; the alerts task handles them at store speed, so the channel only has to
/// absorb bursts while it catches up.
pub const QUEUE: usize = 16_384;
/// How often certificates are checked for expiry and new failures.
const CERT_CHECK: Duration = Duration::from_secs(3600);
/// At most one `cert.expiring` per certificate per this long.
const EXPIRY_REPEAT: i64 = 86_400;

/// Why the alerts could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// The HTTP client could not be built (TLS roots).
    #[error("webhook HTTP client: {0}")]
    Client(String),
}

/// How alerts behave (the broker's `alert_*` and `webhook_*` settings).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `alert_down_after_secs`: how long a tunnel must be gone before `tunnel.down`.
    pub down_after: Duration,
    /// `webhook_allow_private`: let webhooks reach loopback and private addresses.
    pub allow_private: bool,
    /// `webhook_max_attempts`: attempts before a delivery is given up.
    pub max_attempts: u32,
    /// `webhook_backoff_ms`: the first retry's ceiling; each next one doubles it.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub backoff_cap: Duration,
    /// `webhook_timeout_secs`: one attempt, connection included.
    pub timeout: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// `cert.expiring` this long before a certificate's `not_after`.
    pub expiry_warning: Duration,
    /// Pending deliveries per webhook past which new events for it are dropped (a receiver
    /// that has been down for long must not grow the table without bound).
    pub max_pending: i64,
    /// Finished deliveries kept per webhook.
    pub keep_per_hook: i64,
    /// Finished deliveries older than this are pruned.
    pub keep_for: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            down_after: Duration::from_secs(60),
            allow_private: false,
            max_attempts: 8,
            backoff: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            concurrency: 8,
            expiry_warning: Duration::from_secs(14 * 86_400),
            max_pending: 1000,
            keep_per_hook: 200,
            keep_for: Duration::from_secs(30 * 86_400),
        }
    }
}

/// What the watcher tells the alerts task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A tunnel was bound.
    Bind(Tunnel),
    /// A tunnel went away (its session ended, it was cancelled or disconnected).
    Unbind(Tunnel),
    /// The DNS provider refused a change for `name`.
    DnsError {
        /// The record's name.
        name: String,
        /// The provider's answer.
        error: String,
    },
}

/// The sending end the watcher holds, and the receiving end for [`Alerts::run`].
pub fn channel() -> (mpsc::Sender<Signal>, mpsc::Receiver<Signal>) {
    mpsc::channel(QUEUE)
}

/// Whether this node alerts for its cluster. Every node of a cluster reads the same audit log
/// and the same delivery queue, so each would send every alert; one node, the holder of the
/// cluster's lease (the broker gives the ACME lease's flag), queues and sends them. The other
/// nodes follow the same signals (their damper and live map stay current), so the node that
/// takes the lease over carries on where the last one stopped. One node alone always alerts.
#[derive(Debug, Clone)]
pub struct Leading(Arc<std::sync::atomic::AtomicBool>);

impl Leading {
    /// A node that always alerts (one node on its database).
    pub fn always() -> Self {
        Self(Arc::new(std::sync::atomic::AtomicBool::new(true)))
    }

    /// A flag set as this node takes and loses the lease; false until it holds it.
    pub fn flag(flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        Self(flag)
    }

    /// Whether this node alerts now.
    pub fn now(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The alerts task: the damper, certificate checks, and queueing deliveries.
pub struct Alerts {
    store: Arc<dyn Store>,
    settings: Arc<Settings>,
    damper: Damper,
    /// Live tunnels as they were bound (an unbind event no longer knows a route's kind).
    live: HashMap<String, Tunnel>,
    wake: Arc<Notify>,
    /// When each certificate's last `cert.expiring` was queued (Unix seconds).
    expiry_sent: HashMap<String, i64>,
    /// The `last_attempt` of each certificate's failure already reported (or already there at
    /// start, which is not news).
    errors_seen: HashMap<String, i64>,
    first_cert_check: bool,
    /// Whether this node queues what it finds ([`Alerts::while_leading`]).
    leading: Leading,
}

impl Alerts {
    /// The alerts task over `store`; `wake` is shared with the [`Deliverer`].
    pub fn new(store: Arc<dyn Store>, settings: Arc<Settings>, wake: Arc<Notify>) -> Self {
        Self {
            damper: Damper::new(settings.down_after),
            live: HashMap::new(),
            store,
            settings,
            wake,
            expiry_sent: HashMap::new(),
            errors_seen: HashMap::new(),
            first_cert_check: true,
            leading: Leading::always(),
        }
    }

    /// Queues alerts only while `leading` says this node alerts for the cluster (see
    /// [`Leading`]).
    pub fn while_leading(mut self, leading: Leading) -> Self {
        self.leading = leading;
        self
    }

    /// Handles signals and timers until `shutdown`. Tunnels pending down at shutdown are not
    /// reported: the restart's reconnects would report them up a moment later.
    pub async fn run(mut self, mut signals: mpsc::Receiver<Signal>, shutdown: CancellationToken) {
        let mut certs = tokio::time::interval(CERT_CHECK);
        loop {
            let next = self
                .damper
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + CERT_CHECK);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                signal = signals.recv() => match signal {
                    Some(s) => self.on_signal(s).await,
                    None => return,
                },
                _ = tokio::time::sleep_until(next.into()) => {
                    for gone in self.damper.due(Instant::now()) {
                        self.down(&gone).await;
                    }
                }
                _ = certs.tick() => self.check_certificates().await,
            }
        }
    }

    async fn on_signal(&mut self, s: Signal) {
        match s {
            Signal::Bind(t) => {
                self.live.insert(t.name.clone(), t.clone());
                match self.damper.bind(&t) {
                    OnBind::Up => self.tunnel(EventKind::TunnelUp, &t, None).await,
                    OnBind::Flap => {
                        info!(name = %t.name, "tunnel back within alert_down_after_secs: no alert")
                    }
                    OnBind::Replaced(old) => {
                        self.down(&old).await;
                        self.tunnel(EventKind::TunnelUp, &t, None).await;
                    }
                }
            }
            Signal::Unbind(t) => {
                let t = match self.live.remove(&t.name) {
                    Some(bound) if bound.owner == t.owner => bound,
                    _ => t,
                };
                self.damper.unbind(t, Instant::now(), warren_store::now());
            }
            Signal::DnsError { name, error } => {
                self.queue(&Alert::dns_error(&name, &error, warren_store::now()))
                    .await;
            }
        }
    }

    async fn down(&self, gone: &damper::Gone) {
        self.tunnel(EventKind::TunnelDown, &gone.tunnel, Some(gone.since))
            .await;
    }

    async fn tunnel(&self, kind: EventKind, t: &Tunnel, down_since: Option<i64>) {
        // Every node reads every bind from the audit log, and a reconnect storm is thousands:
        // the owner's name is read only when some hook gets the alert, on the alerting node.
        let Some(hooks) = self.hooks_for(kind, t.owner).await else {
            return;
        };
        let user = match t.owner {
            Some(id) => match self.store.user_by_id(id).await {
                Ok(u) => u.map(|u| u.name).unwrap_or_default(),
                Err(e) => {
                    warn!(error = %e, "cannot read the tunnel's owner");
                    String::new()
                }
            },
            None => String::new(),
        };
        let alert = Alert::tunnel(kind, t, &user, warren_store::now(), down_since);
        self.enqueue(&alert, hooks).await;
    }

    /// Queues `alert` for every hook that gets it (on the alerting node of a cluster).
    pub async fn queue(&self, alert: &Alert) {
        if let Some(hooks) = self.hooks_for(alert.kind, alert.owner).await {
            self.enqueue(alert, hooks).await;
        }
    }

    /// The hooks an alert of `kind` about `owner`'s tunnel goes to; `None` when there are
    /// none, or when another node alerts for the cluster.
    async fn hooks_for(&self, kind: EventKind, owner: Option<i64>) -> Option<Vec<Webhook>> {
        if !self.leading.now() {
            debug!(event = kind.as_str(), "another node alerts for the cluster");
            return None;
        }
        let filter = match owner {
            Some(owner) if !kind.global_only() => WebhookFilter::EventsOf(owner),
            _ => WebhookFilter::Global,
        };
        match self.store.list_webhooks(filter).await {
            Ok(hooks) if hooks.is_empty() => None,
            Ok(hooks) => Some(hooks),
            Err(e) => {
                warn!(error = %e, event = kind.as_str(), "cannot read webhooks; alert lost");
                None
            }
        }
    }

    async fn enqueue(&self, alert: &Alert, hooks: Vec<Webhook>) {
        let body = alert.body.to_string();
        for hook in hooks {
            match self.store.pending_deliveries(hook.id).await {
                Ok(n) if n >= self.settings.max_pending => {
                    warn!(
                        hook = hook.id,
                        pending = n,
                        event = alert.kind.as_str(),
                        "webhook queue full; alert dropped"
                    );
                    continue;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot count pending deliveries"),
            }
            if let Err(e) = self
                .store
                .enqueue_delivery(hook.id, alert.kind.as_str(), &body)
                .await
            {
                warn!(error = %e, hook = hook.id, "cannot queue a webhook delivery");
            }
        }
        self.wake.notify_one();
    }

    async fn check_certificates(&mut self) {
        let certs = match self.store.list_certificates().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read certificates for alerts");
                return;
            }
        };
        let now = warren_store::now();
        let first = std::mem::replace(&mut self.first_cert_check, false);
        let alerts = certificate_alerts(
            &certs,
            now,
            self.settings.expiry_warning.as_secs() as i64,
            &mut self.expiry_sent,
            &mut self.errors_seen,
            first,
        );
        for a in alerts {
            self.queue(&a).await;
        }
    }
}

/// The certificate alerts due at `now`: `cert.expiring` for each certificate within `warning`
/// seconds of its end (at most once a day each), and `cert.error` for each failure newer than
/// the last seen (failures already there at the `first` check are remembered, not sent).
pub fn certificate_alerts(
    certs: &[Certificate],
    now: i64,
    warning: i64,
    expiry_sent: &mut HashMap<String, i64>,
    errors_seen: &mut HashMap<String, i64>,
    first: bool,
) -> Vec<Alert> {
    let mut out = Vec::new();
    for c in certs {
        if let Some(not_after) = c.not_after
            && c.chain_pem.is_some()
            && not_after - now <= warning
            && expiry_sent
                .get(&c.name)
                .is_none_or(|sent| now - sent >= EXPIRY_REPEAT)
        {
            expiry_sent.insert(c.name.clone(), now);
            out.push(Alert::cert_expiring(&c.name, not_after, now));
        }
        if let (Some(error), Some(at)) = (&c.last_error, c.last_attempt) {
            let seen = errors_seen.insert(c.name.clone(), at);
            if !first && seen.is_none_or(|s| s < at) {
                out.push(Alert::cert_error(&c.name, error, now));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str, not_after: Option<i64>, error: Option<(&str, i64)>) -> Certificate {
        Certificate {
            id: 1,
            name: name.into(),
            chain_pem: not_after.map(|_| "PEM".into()),
            private_key: None,
            not_before: None,
            not_after,
            issuer: None,
            challenge: None,
            last_error: error.map(|(e, _)| e.into()),
            last_attempt: error.map(|(_, at)| at),
            next_attempt: None,
            updated_at: 0,
            owner_id: None,
        }
    }

    #[test]
    fn certificate_alerts_once_a_day_and_only_new_failures() {
        let day = 86_400;
        let now = 1_000 * day;
        let warning = 14 * day;
        let (mut sent, mut seen) = (HashMap::new(), HashMap::new());
        let certs = [
            cert("soon.example.com", Some(now + 3 * day), None),
            cert("later.example.com", Some(now + 60 * day), None),
            cert("broken.example.com", None, Some(("rate limited", now - 10))),
        ];
        // At start: the expiring one; the failure already there is not news.
        let a = certificate_alerts(&certs, now, warning, &mut sent, &mut seen, true);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, EventKind::CertExpiring);
        assert_eq!(a[0].body["name"], "soon.example.com");
        assert_eq!(a[0].body["days_left"], 3);
        assert_eq!(a[0].owner, None, "global hooks only");
        // An hour later nothing repeats.
        let a = certificate_alerts(&certs, now + 3600, warning, &mut sent, &mut seen, false);
        assert!(a.is_empty(), "{a:?}");
        // A new failure is reported once; a day later the expiry warning comes again.
        let failed_again = [
            cert("soon.example.com", Some(now + 3 * day), None),
            cert(
                "broken.example.com",
                None,
                Some(("still rate limited", now + day)),
            ),
        ];
        let a = certificate_alerts(
            &failed_again,
            now + day,
            warning,
            &mut sent,
            &mut seen,
            false,
        );
        let kinds: Vec<EventKind> = a.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [EventKind::CertExpiring, EventKind::CertError]);
        assert_eq!(a[1].body["error"], "still rate limited");
        let a = certificate_alerts(
            &failed_again,
            now + day + 60,
            warning,
            &mut sent,
            &mut seen,
            false,
        );
        assert!(a.is_empty(), "{a:?}");
    }
}

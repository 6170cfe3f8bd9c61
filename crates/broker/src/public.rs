//! Going public: DNS records and certificates follow the names tenants reserve and bind.
//!
//! The watcher (which tails the audit log) calls [`Public::name_up`] when a name is reserved
//! or bound and [`Public::name_down`] when it is released (random names: once their grace
//! period is over). DNS changes are kept as a desired state per name and applied by
//! [`Public::run`], a task of its own (woken when a change is wanted, else once a second for
//! retries), which retries failures with backoff and writes every outcome to the audit log
//! (`dns.set`, `dns.remove`, `dns.error`), so nothing a provider half-did goes unaccounted. It
//! used to run inside the watcher's loop, where a provider taking 30 s to answer held up the
//! handling of a `user.disable` for as long.
//! Certificates are the ACME manager's business. Every tenant name is one label under the base
//! domain, so with a wildcard (`acme_wildcard`) the wildcard serves them all, reserved or random,
//! and none is ordered on its own: one order instead of one per name against the CA's rate
//! limits. Without one each name is requested, charged to its owner (the reservation's holder,
//! or the user who bound it) in the manager's weekly order budget; a released name's
//! certificate is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use warren_acme::{AcmeSettings, CertManager, KeyCipher};
use warren_dns::{
    BuiltinDns, BuiltinSettings, Cloudflare, CloudflareSettings, DnsProvider, Rfc2136,
    Rfc2136Settings,
};
use warren_registry::{Lookup, Registry};
use warren_store::{AuditAction, AuditEvent, Store};
use warren_tls::{CertStore, Challenges};

use crate::config::{Config, DnsConfig};

/// In a cluster, how long the other nodes get to take up a challenge answer (they hear of
/// it through a Postgres notification, in milliseconds) before the CA is told to look.
const CHALLENGE_SETTLE: Duration = Duration::from_millis(500);

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How often due retries and faded names are looked at when nothing wakes the task sooner.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Present,
    Absent,
}

struct Pending {
    want: Want,
    due: Instant,
    failures: u32,
    last_error: Option<String>,
}

/// DNS and certificate provisioning for the running broker.
pub struct Public {
    domain: String,
    addrs: Vec<IpAddr>,
    dns: Option<Arc<dyn DnsProvider>>,
    acme: Option<Arc<CertManager>>,
    wildcard: bool,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    grace: Duration,
    pending: Mutex<HashMap<String, Pending>>,
    /// Random names that went away: checked once their grace period is over.
    fading: Mutex<HashMap<String, Instant>>,
    /// Rung when a DNS change is wanted, so it is made at once rather than on the next tick.
    wake: tokio::sync::Notify,
    /// Failed provider calls, labelled with the provider's kind.
    dns_errors: warren_metrics::Counter,
    /// Whether this node drives the DNS provider: always alone and for the built-in server
    /// (each node answers from its own); in a cluster with a remote provider, only the node
    /// holding the ACME lease (the others keep what is wanted, and apply it if they take over).
    leading: std::sync::atomic::AtomicBool,
}

/// What `serve` prints about DNS.
pub struct PublicInfo {
    pub dns: String,
    pub acme: String,
}

impl Public {
    /// Builds the provider and the ACME manager, starts their tasks on `tasks`, and queues
    /// records (and certificates) for every reserved name.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        config: &Config,
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        certs: Arc<CertStore>,
        challenges: Arc<Challenges>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
        metrics: &Arc<warren_metrics::Metrics>,
    ) -> Result<(Arc<Self>, PublicInfo)> {
        let p = &config.public;
        let domain = config.domain.clone();
        let mut dns_info = "none".to_owned();
        let dns: Option<Arc<dyn DnsProvider>> = match &p.dns {
            DnsConfig::None => None,
            DnsConfig::Builtin { addr, ns } => {
                let server = Arc::new(BuiltinDns::new(BuiltinSettings {
                    zone: domain.clone(),
                    ns: ns.clone(),
                    soa_email: format!("hostmaster.{domain}"),
                    ttl: 60,
                    apex_addrs: p.addrs.clone(),
                })?);
                let (udp, tcp) = BuiltinDns::bind_sockets(*addr)
                    .await
                    .with_context(|| format!("dns_addr: cannot listen on {addr}"))?;
                dns_info = format!("built-in server on {} (udp+tcp)", udp.local_addr()?);
                tasks.spawn(server.clone().run(udp, tcp, shutdown.clone()));
                for n in ns.iter().filter(|n| n.ends_with(&format!(".{domain}"))) {
                    server.set_addresses(n, &p.addrs).await?;
                }
                Some(server)
            }
            remote => {
                dns_info = describe_remote(remote);
                remote_dns(remote)?
            }
        };
        let mut acme_info = "off (no acme_directory)".to_owned();
        let acme = match &p.acme {
            None => None,
            Some(a) => {
                let key = match &a.cert_key {
                    Some(k) => KeyCipher::from_base64(k.expose())?,
                    None if store.shared() => cluster_cert_key(&*store, config).await?,
                    None => KeyCipher::load_or_create(&config.data_dir.join("cert-key"))?,
                };
                let settings = acme_settings(a, key)?;
                let manager =
                    CertManager::new(settings, store.clone(), certs, challenges, dns.clone())
                        .with_metrics(metrics.clone());
                let manager = Arc::new(if store.shared() {
                    manager.clustered(CHALLENGE_SETTLE)
                } else {
                    manager
                });
                let loaded = manager.load().await?;
                tasks.spawn(manager.clone().run(shutdown.clone()));
                if a.wildcard {
                    manager.request(&format!("*.{domain}"), None);
                }
                acme_info = format!(
                    "{} ({}{}, {loaded} certificates loaded, {} orders a week, {} per user)",
                    a.directory,
                    a.challenge,
                    if a.wildcard {
                        " + wildcard via dns-01"
                    } else {
                        ""
                    },
                    a.budget.per_week,
                    a.budget.per_owner_per_week,
                );
                Some(manager)
            }
        };
        let dns_errors = dns
            .as_ref()
            .map_or_else(warren_metrics::Counter::noop, |d| {
                metrics.dns_errors(d.kind())
            });
        let public = Arc::new(Self {
            wildcard: p.acme.as_ref().is_some_and(|a| a.wildcard),
            domain,
            addrs: p.addrs.clone(),
            dns,
            acme,
            store: store.clone(),
            registry,
            grace: config.grace,
            pending: Mutex::new(HashMap::new()),
            fading: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            dns_errors,
            leading: std::sync::atomic::AtomicBool::new(
                !store.shared() || matches!(p.dns, DnsConfig::None | DnsConfig::Builtin { .. }),
            ),
        });
        tasks.spawn(public.clone().run(shutdown.clone()));
        let reserved = store.list_reservations(None).await?;
        for r in &reserved {
            public.name_up(&r.name, Some(r.user_id));
        }
        if matches!(
            p.dns,
            DnsConfig::Cloudflare { .. } | DnsConfig::Rfc2136 { .. }
        ) {
            public.withdraw_leftovers(&reserved).await?;
        }
        Ok((
            public,
            PublicInfo {
                dns: dns_info,
                acme: acme_info,
            },
        ))
    }

    /// This node took or lost the cluster's ACME lease: it orders certificates and drives a
    /// remote DNS provider only while it holds it.
    pub fn set_leading(&self, leading: bool) {
        if !matches!(self.remote_dns(), Some(false)) {
            self.leading
                .store(leading, std::sync::atomic::Ordering::Relaxed);
            self.wake.notify_one();
        }
        if let Some(acme) = &self.acme {
            acme.set_leading(leading);
        }
    }

    /// `Some(true)` for Cloudflare or RFC 2136, `Some(false)` for the built-in server.
    fn remote_dns(&self) -> Option<bool> {
        self.dns.as_ref().map(|d| d.kind() != "builtin")
    }

    /// The certificate manager, when certificates are ordered (custom domains order theirs
    /// through it too).
    pub fn acme(&self) -> Option<Arc<CertManager>> {
        self.acme.clone()
    }

    /// Records an external provider may still hold for names that are gone: released while
    /// the broker was down (from the CLI), or random names whose tunnels ended with the last
    /// run. A name's newest `dns.*` audit row says whether its records may exist (anything but
    /// `dns.remove`); those not reserved are withdrawn, and a tunnel that binds one of them
    /// again meanwhile simply wants it back. The built-in server keeps nothing across runs.
    async fn withdraw_leftovers(&self, reserved: &[warren_store::Reservation]) -> Result<()> {
        let suffix = format!(".{}", self.domain);
        let newest = self
            .store
            .last_events_by_subject(&[
                AuditAction::DnsSet,
                AuditAction::DnsRemove,
                AuditAction::DnsError,
            ])
            .await?;
        for e in newest {
            let Some(label) = e.subject.strip_suffix(&suffix) else {
                continue;
            };
            let gone = !reserved.iter().any(|r| r.name == label);
            if gone && e.kind() != Some(AuditAction::DnsRemove) {
                info!(fqdn = %e.subject, "withdrawing the records of a name that is gone");
                self.want(&e.subject, Want::Absent);
            }
        }
        Ok(())
    }

    fn fqdn(&self, label: &str) -> String {
        format!("{label}.{}", self.domain)
    }

    /// A name was reserved or bound by `owner`: publish it and see to its certificate (none of
    /// its own when the wildcard covers it; else one charged to `owner`'s share of the weekly
    /// order budget).
    pub fn name_up(&self, label: &str, owner: Option<i64>) {
        let fqdn = self.fqdn(label);
        self.fading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(label);
        self.want(&fqdn, Want::Present);
        if let Some(acme) = &self.acme
            && !self.wildcard
        {
            acme.request(&fqdn, owner);
        }
    }

    /// A name was released (or a random one faded): withdraw its records and drop its
    /// certificate, which would otherwise be renewed for nobody.
    pub fn name_down(&self, label: &str) {
        let fqdn = self.fqdn(label);
        self.want(&fqdn, Want::Absent);
        if let Some(acme) = self.acme.clone() {
            tokio::spawn(async move {
                if let Err(e) = acme.remove(&fqdn).await {
                    tracing::debug!(%fqdn, error = %e, "no certificate to drop");
                }
            });
        }
    }

    /// A random name lost its tunnel: withdraw it once the grace period shows it is gone.
    pub fn name_fading(&self, label: &str) {
        self.fading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(label.to_owned(), Instant::now() + self.grace);
    }

    fn want(&self, fqdn: &str, want: Want) {
        if self.dns.is_none() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.insert(
            fqdn.to_owned(),
            Pending {
                want,
                due: Instant::now(),
                failures: 0,
                last_error: None,
            },
        );
        drop(pending);
        self.wake.notify_one();
    }

    /// Applies DNS changes as they are wanted and retries failures when due, on its own task:
    /// a slow DNS provider must not hold up the watcher, which drops a disabled user's tunnels.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
            self.tick().await;
        }
    }

    /// Applies due DNS changes and withdraws faded names.
    async fn tick(&self) {
        let now = Instant::now();
        let faded: Vec<String> = {
            let mut fading = self.fading.lock().unwrap_or_else(|p| p.into_inner());
            let due: Vec<String> = fading
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(n, _)| n.clone())
                .collect();
            for n in &due {
                fading.remove(n);
            }
            due
        };
        for label in faded {
            if matches!(self.registry.lookup(&label), Lookup::Unknown) {
                self.name_down(&label);
            }
        }
        let Some(dns) = &self.dns else { return };
        if !self.leading.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let due: Vec<(String, Want)> = {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending
                .iter()
                .filter(|(_, p)| p.due <= now)
                .map(|(n, p)| (n.clone(), p.want))
                .collect()
        };
        for (fqdn, want) in due {
            let result = match want {
                Want::Present => dns.set_addresses(&fqdn, &self.addrs).await,
                Want::Absent => dns.remove_addresses(&fqdn).await,
            };
            let event = {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let Some(p) = pending.get_mut(&fqdn) else {
                    continue;
                };
                if p.want != want {
                    continue; // changed meanwhile: the next tick applies the new wish
                }
                match result {
                    Ok(()) => {
                        pending.remove(&fqdn);
                        let action = if want == Want::Present {
                            AuditAction::DnsSet
                        } else {
                            AuditAction::DnsRemove
                        };
                        Some(AuditEvent::new("broker", action, &fqdn, None))
                    }
                    Err(e) => {
                        self.dns_errors.increment(1);
                        p.failures += 1;
                        let delay = retry_delay(p.failures, rand::random::<f64>());
                        p.due = Instant::now() + delay;
                        let text = e.to_string();
                        warn!(%fqdn, error = %text, retry_in = ?delay, "DNS change failed");
                        // Log the first failure and each new reason, not every retry.
                        (p.last_error.as_deref() != Some(text.as_str())).then(|| {
                            p.last_error = Some(text.clone());
                            let mut ev =
                                AuditEvent::new("broker", AuditAction::DnsError, &fqdn, None);
                            ev.detail = format!(
                                "{} via {}: {text}",
                                if want == Want::Present {
                                    "set"
                                } else {
                                    "remove"
                                },
                                dns.kind()
                            );
                            ev
                        })
                    }
                }
            };
            if let Some(ev) = event {
                if ev.kind() != Some(AuditAction::DnsError) {
                    info!(fqdn = %ev.subject, action = %ev.action, "DNS updated");
                }
                let _ = self.store.record(&ev).await;
            }
        }
    }
}

/// The DNS provider the broker drives over the network (Cloudflare, an RFC 2136 server);
/// `None` for none or the built-in server, which is the broker itself. Shared by `serve` and
/// `broker check`.
pub fn remote_dns(dns: &DnsConfig) -> Result<Option<Arc<dyn DnsProvider>>> {
    Ok(match dns {
        DnsConfig::None | DnsConfig::Builtin { .. } => None,
        DnsConfig::Cloudflare { token, zone, api } => {
            Some(Arc::new(Cloudflare::new(CloudflareSettings {
                api_base: api.clone(),
                token: token.clone(),
                zone: zone.clone(),
            })?))
        }
        DnsConfig::Rfc2136 {
            server,
            zone,
            key_name,
            secret,
            algorithm,
        } => Some(Arc::new(Rfc2136::new(Rfc2136Settings {
            server: *server,
            zone: zone.clone(),
            key_name: key_name.clone(),
            algorithm: *algorithm,
            secret: secret.clone(),
            ttl: 60,
        })?)),
    })
}

/// How `serve` names a remote DNS provider at start.
pub fn describe_remote(dns: &DnsConfig) -> String {
    match dns {
        DnsConfig::None => "none".into(),
        DnsConfig::Builtin { addr, .. } => format!("built-in server on {addr}"),
        DnsConfig::Cloudflare { zone, .. } => format!("cloudflare zone {zone}"),
        DnsConfig::Rfc2136 { server, zone, .. } => format!("rfc2136 {server} zone {zone}"),
    }
}

/// The ACME client's settings from the config, with the key that seals its secrets.
pub fn acme_settings(a: &crate::config::AcmeConfig, key: KeyCipher) -> Result<AcmeSettings> {
    let mut settings = AcmeSettings::new(a.directory.clone(), key);
    settings.challenge = a.challenge;
    settings.email = a.email.clone();
    settings.budget = a.budget;
    settings.propagation = a.propagation.clone();
    if let Some(path) = &a.root_ca {
        settings.root_ca_pem = Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("acme_root_ca: cannot read {}", path.display()))?,
        );
    }
    Ok(settings)
}

/// How long after its `failures`-th failure in a row a DNS change is tried again: exponential
/// backoff from RETRY_MIN, capped at RETRY_MAX, with "equal jitter": a random point (`unit`,
/// in [0, 1)) in the upper half of the step. Without it every name that failed together (a
/// provider outage) retried in lockstep, each wave hitting the recovering provider at once;
/// the fixed half keeps the backoff's growth, so a failing provider is still asked less and
/// less often.
fn retry_delay(failures: u32, unit: f64) -> Duration {
    let step = RETRY_MIN
        .saturating_mul(1 << failures.min(16))
        .min(RETRY_MAX);
    step / 2 + step.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
}

/// The key sealing certificates' private keys, shared by every node of a cluster through the
/// database: the first node to need it stores its own (the `cert-key` file a single broker
/// made, when it becomes the first node of a cluster; else a fresh one), and every node uses
/// the stored one, so each can serve what another ordered.
async fn cluster_cert_key(store: &dyn Store, config: &Config) -> Result<KeyCipher> {
    let path = config.data_dir.join("cert-key");
    let mine = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(_) => KeyCipher::generate_base64()?,
    };
    let kept = store
        .cluster_secret("cert_key", &mine)
        .await
        .context("cannot read the cluster's certificate key from the database")?;
    Ok(KeyCipher::from_base64(&kept)?)
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn retries_back_off_with_jitter_within_bounds() {
        for failures in 0..40 {
            let step = RETRY_MIN
                .saturating_mul(1 << failures.min(16))
                .min(RETRY_MAX);
            let low = retry_delay(failures, 0.0);
            let high = retry_delay(failures, 0.999_999);
            assert_eq!(low, step / 2, "failures {failures}");
            assert!(
                high <= step && high > step.mul_f64(0.99),
                "failures {failures}: {high:?}"
            );
            let any = retry_delay(failures, rand::random::<f64>());
            assert!(any >= low && any <= step);
        }
        assert_eq!(retry_delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(
            retry_delay(30, 0.999_999).as_secs(),
            299,
            "capped at RETRY_MAX"
        );
        // Names failing together spread out instead of retrying at one instant.
        let spread: std::collections::BTreeSet<_> = (0..100)
            .map(|_| retry_delay(5, rand::random::<f64>()).as_millis())
            .collect();
        assert!(spread.len() > 50, "{}", spread.len());
    }
}

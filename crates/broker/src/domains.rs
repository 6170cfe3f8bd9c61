//! Custom domains in the running broker: a background task that checks each domain when it is
//! due (pending ones every `domain_pending_secs`, verified ones every `domain_recheck_secs`),
//! routes the ones being served as aliases of their reservation's name, and has their
//! certificates ordered (HTTP names: a TLS passthrough owner holds their own) and dropped.
//!
//! The store is the truth: each tick reads every domain (one query), so a change made by the
//! CLI (another process) or by another node is served within a tick, and a domain whose grace
//! period ends stops being served without anything being written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren_acme::CertManager;
use warren_domains::{Checker, Intervals, State, Status};
use warren_registry::Registry;
use warren_store::{AuditEvent, CustomDomain, DomainFilter};
use warren_tenants::{DomainSettings, Tenants};

use crate::config::Config;

/// How often the task looks for due checks and rebuilds the aliases. A grace period or a
/// check interval ends within a tick of when it is due.
const TICK: Duration = Duration::from_secs(1);

/// The service's domain settings for `config`; `None` (logged) when no resolver can be set up,
/// and then domains can be attached but not checked.
pub fn checking(config: &Config) -> Option<DomainSettings> {
    match Checker::new(&config.domains.resolvers) {
        Ok(checker) => Some(DomainSettings {
            checker,
            addrs: config.public.addrs.clone(),
            grace_secs: config.domains.intervals.grace,
        }),
        Err(e) => {
            warn!(error = %e, "custom domains cannot be checked");
            None
        }
    }
}

/// The background task's state.
pub struct DomainTask {
    tenants: Tenants,
    registry: Arc<Registry>,
    acme: Option<Arc<CertManager>>,
    intervals: Intervals,
    /// Hosts whose certificate has been asked for, so each is asked once and dropped once.
    certified: HashSet<String>,
}

fn status_of(d: &CustomDomain) -> Status {
    Status {
        state: State::from_word(&d.state),
        verified_at: d.verified_at,
        failing_since: d.failing_since,
    }
}

impl DomainTask {
    /// A task over `tenants` (which must be able to check domains) routing into `registry`.
    pub fn new(
        tenants: Tenants,
        registry: Arc<Registry>,
        acme: Option<Arc<CertManager>>,
        intervals: Intervals,
    ) -> Self {
        Self {
            tenants,
            registry,
            acme,
            intervals,
            certified: HashSet::new(),
        }
    }

    /// Ticks until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.tick().await {
                warn!(error = %e, "custom domains: cannot read the store; retrying");
            }
        }
    }

    /// Checks what is due, then routes and certifies what is served.
    pub async fn tick(&mut self) -> Result<()> {
        let now = warren_store::now();
        let mut domains = self.tenants.store.list_domains(DomainFilter::All).await?;
        if self.tenants.domains.is_some() {
            for d in &mut domains {
                if warren_domains::due_at(status_of(d), d.last_checked, self.intervals, now) > now {
                    continue;
                }
                match self.tenants.check_domain(d, "broker").await {
                    Ok(checked) => {
                        if checked.state != d.state {
                            info!(domain = %checked.hostname, state = %checked.state, error = ?checked.last_error, "custom domain checked");
                        }
                        *d = checked;
                    }
                    Err(e) => warn!(domain = %d.hostname, error = %e, "custom domain check failed"),
                }
            }
        }
        let now = warren_store::now();
        let served: Vec<&CustomDomain> = domains
            .iter()
            .filter(|d| warren_domains::serving(status_of(d), now, self.intervals.grace))
            .collect();
        let aliases: HashMap<String, String> = served
            .iter()
            .map(|d| (d.hostname.clone(), d.reservation.clone()))
            .collect();
        let before = self.registry.aliases();
        if aliases != before {
            for (host, name) in &before {
                if aliases.get(host) != Some(name) {
                    info!(domain = %host, %name, "custom domain no longer served");
                    let still = domains.iter().find(|d| &d.hostname == host);
                    if let Some(d) = still {
                        let mut e = AuditEvent::new(
                            "broker",
                            warren_store::AuditAction::DomainUnroute,
                            host,
                            Some(d.user_id),
                        );
                        e.detail = format!("{} past its grace period", d.state);
                        let _ = self.tenants.store.record(&e).await;
                    }
                }
            }
            self.registry.set_aliases(aliases);
        }
        self.certify(&served);
        Ok(())
    }

    /// Asks for the certificate of each served HTTP domain once, and drops those of domains
    /// no longer served.
    fn certify(&mut self, served: &[&CustomDomain]) {
        let Some(acme) = &self.acme else { return };
        let wanted: HashSet<String> = served
            .iter()
            .filter(|d| d.kind == "http")
            .map(|d| d.hostname.clone())
            .collect();
        for d in served.iter().filter(|d| wanted.contains(&d.hostname)) {
            if self.certified.insert(d.hostname.clone()) {
                acme.request(&d.hostname, Some(d.user_id));
            }
        }
        let gone: Vec<String> = self.certified.difference(&wanted).cloned().collect();
        for host in gone {
            self.certified.remove(&host);
            let acme = acme.clone();
            tokio::spawn(async move {
                if let Err(e) = acme.remove(&host).await {
                    tracing::debug!(%host, error = %e, "no certificate to drop");
                }
            });
        }
    }
}

//! [`CertManager`]: which names have certificates, when to order, renew or retry, and putting
//! the results where the edge serves them.
//!
//! The store is the source of truth (`next_attempt` per name says when to act next), the
//! `CertStore` is what the edge serves. Every order goes through one line ([`work`]): the
//! weekly order budget is decided and the orders it admits are placed under one async mutex,
//! so two callers cannot both take the budget's last slot. Within it a per-name async mutex
//! serialises an order with [`CertManager::remove`]; the account slot is an async mutex held
//! across the CA round trip on purpose (concurrent first orders must create one account, not
//! two); the std mutexes guard small maps and are never held across an `.await`.

mod ari;
mod work;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use instant_acme::Account;
use tokio::sync::Notify;
use tracing::{info, warn};
use warren_dns::DnsProvider;
use warren_store::{Certificate, NewCertificate, Store, now};
use warren_tls::{CertStore, CertifiedKey, Challenges};

use crate::budget::Candidate;
use crate::names::validate_name;
use crate::order::{self, Responders};
use crate::schedule::{AriPlan, jitter, renew_at, retry_delay};
use crate::{AcmeError, AcmeSettings, ChallengeKind, account};

/// Who the store records as having issued certificates.
const ACTOR: &str = "acme";
/// What a name's `last_error` starts with while its first order waits for the weekly order
/// budget (`broker certs list` shows it, with `next_attempt` the next look). Such a row is not a
/// failure: it is not backed off, and asking for the name again re-reads the budget.
pub const BUDGET_WAIT: &str = "waiting for the weekly order budget";

/// One managed name as `broker certs list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    /// `chat.example.com` or `*.example.com`.
    pub name: String,
    /// Issuer of the current certificate; `None` before the first success.
    pub issuer: Option<String>,
    /// Expiry of the current certificate, Unix seconds.
    pub not_after: Option<i64>,
    /// Why the last attempt failed; `None` after a success.
    pub last_error: Option<String>,
    /// When the manager acts next (renewal, retry after a failure, or next look at the order
    /// budget), Unix seconds.
    pub next_attempt: Option<i64>,
    /// The tenant the name's orders are charged to; `None` for the broker's own names.
    pub owner: Option<i64>,
}

impl CertStatus {
    /// The first order is held back by the weekly order budget (see [`BUDGET_WAIT`]).
    pub fn waiting_for_budget(&self) -> bool {
        self.not_after.is_none()
            && self
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(BUDGET_WAIT))
    }
}

impl From<&Certificate> for CertStatus {
    fn from(row: &Certificate) -> Self {
        Self {
            name: row.name.clone(),
            issuer: row.issuer.clone(),
            not_after: row.not_after,
            last_error: row.last_error.clone(),
            next_attempt: row.next_attempt,
            owner: row.owner_id,
        }
    }
}

/// Gets, keeps and renews certificates; see the crate docs for the life cycle.
pub struct CertManager {
    settings: AcmeSettings,
    store: Arc<dyn Store>,
    certs: Arc<CertStore>,
    challenges: Arc<Challenges>,
    dns: Option<Arc<dyn DnsProvider>>,
    account: tokio::sync::Mutex<Option<Account>>,
    /// Set when the CA says our stored account does not exist (CA reset): create a new one.
    account_gone: AtomicBool,
    /// Set once the CA has answered a renewal-information request: renewals then name the
    /// certificate they replace (see `ari`).
    ari_offered: AtomicBool,
    name_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Names waiting for the background task ([`CertManager::request`]) with their owners,
    /// first come first served.
    queue: Mutex<Vec<(String, Option<i64>)>>,
    /// Held while the order budget is decided and the orders it admits are placed.
    deciding: tokio::sync::Mutex<()>,
    wake: Notify,
    /// `not_after` of what is installed in the `CertStore`, per name, to install only changes.
    installed: Mutex<HashMap<String, i64>>,
    /// When an attempt for each name failed and the store could not record it: the background
    /// task then waits `retry_min` anyway (no tight loop against the CA).
    attempted: Mutex<HashMap<String, Instant>>,
    /// Orders issued and failed.
    metrics: Arc<warren_metrics::Metrics>,
    /// Whether this node orders: always alone; in a cluster, only the node holding the ACME
    /// lease (the others install what it stores).
    leading: AtomicBool,
    /// In a cluster: challenge answers are published in the store, and the other nodes get
    /// this long to take them up before the CA is told to look.
    shared: Option<std::time::Duration>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("directory_url", &self.settings.directory_url)
            .field("challenge", &self.settings.challenge)
            .finish_non_exhaustive()
    }
}

impl CertManager {
    /// A manager ordering from `settings.directory_url`, storing in `store`, serving through
    /// `certs`, answering HTTP-01 / TLS-ALPN-01 through `challenges` and DNS-01 through `dns`.
    pub fn new(
        settings: AcmeSettings,
        store: Arc<dyn Store>,
        certs: Arc<CertStore>,
        challenges: Arc<Challenges>,
        dns: Option<Arc<dyn DnsProvider>>,
    ) -> Self {
        Self {
            settings,
            store,
            certs,
            challenges,
            dns,
            account: tokio::sync::Mutex::new(None),
            account_gone: AtomicBool::new(false),
            ari_offered: AtomicBool::new(false),
            name_locks: Mutex::new(HashMap::new()),
            queue: Mutex::new(Vec::new()),
            deciding: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            installed: Mutex::new(HashMap::new()),
            attempted: Mutex::new(HashMap::new()),
            metrics: Arc::new(warren_metrics::Metrics::noop()),
            leading: AtomicBool::new(true),
            shared: None,
        }
    }

    /// One of several nodes on one database: orders only while [`CertManager::set_leading`]
    /// says so (not at first), and publishes challenge answers for the other nodes, waiting
    /// `settle` for them to take each up.
    pub fn clustered(mut self, settle: std::time::Duration) -> Self {
        self.leading = AtomicBool::new(false);
        self.shared = Some(settle);
        self
    }

    /// Whether this node orders and renews (it holds the cluster's ACME lease); waking the
    /// background task either way.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Whether this node orders and renews.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Re-reads the store at the next pass: another node stored or removed a certificate.
    pub fn refresh(&self) {
        self.wake.notify_one();
    }

    /// Counts orders, issued and failed, into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<warren_metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Installs every stored certificate into the `CertStore`; call once at start, before the
    /// edge accepts connections. Returns how many were installed. A certificate that cannot be
    /// decrypted or parsed is logged and skipped (it will be re-ordered), not fatal.
    pub async fn load(&self) -> Result<usize, AcmeError> {
        let rows = self.store.list_certificates().await?;
        Ok(self.sync(&rows))
    }

    /// Makes sure `name` has a certificate, ordering one now if it has none, and waits for the
    /// outcome. A valid stored certificate is returned as is (renewal is [`CertManager::run`]'s
    /// job); a name whose last attempt failed is not retried before its backoff expires
    /// ([`AcmeError::BackingOff`]); a first order past the weekly order budget is recorded as
    /// waiting and not placed ([`AcmeError::OverBudget`]). The name keeps the owner stored for
    /// it. Wildcards (`*.example.com`) are validated with DNS-01.
    pub async fn ensure(&self, name: &str) -> Result<CertStatus, AcmeError> {
        let name = validate_name(name)?;
        let row = self.store.certificate(&name).await?;
        if let Some(row) = &row {
            if self.serving(row) {
                return Ok(row.into());
            }
            if let Some(e) = backing_off(row) {
                return Err(e);
            }
        }
        let candidate = Candidate {
            name,
            owner: row.as_ref().and_then(|r| r.owner_id),
            renewal: row.as_ref().is_some_and(|r| r.material().is_some()),
        };
        self.one(candidate, false).await
    }

    /// Queues `name` for the background task and returns at once: what the broker calls when a
    /// name is reserved or bound. `owner` is the tenant its orders are charged to in the weekly
    /// order budget (who holds its reservation, or bound it); `None` for the broker's own names.
    /// Invalid names are logged there.
    pub fn request(&self, name: &str, owner: Option<i64>) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            match queue.iter_mut().find(|(n, _)| *n == name) {
                Some((_, o)) => *o = owner.or(*o),
                None => queue.push((name, owner)),
            }
        }
        self.wake.notify_one();
    }

    /// Orders a new certificate for `name` now, whatever the state of the current one or of
    /// its backoff; the current one is served until the new one is in. A renewal always goes
    /// ahead; a name with no certificate yet is a first order, and waits like any other if the
    /// weekly order budget is used up.
    pub async fn force_renew(&self, name: &str) -> Result<CertStatus, AcmeError> {
        let name = validate_name(name)?;
        let row = self.store.certificate(&name).await?;
        let candidate = Candidate {
            name,
            owner: row.as_ref().and_then(|r| r.owner_id),
            renewal: row.as_ref().is_some_and(|r| r.material().is_some()),
        };
        self.one(candidate, true).await
    }

    /// Stops serving and forgets `name`'s certificate (the name was released).
    pub async fn remove(&self, name: &str) -> Result<(), AcmeError> {
        let name = validate_name(name)?;
        let lock = self.name_lock(&name);
        let _one_order_per_name = lock.lock().await;
        self.certs.remove(&name);
        self.installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name);
        self.store.delete_certificate(ACTOR, &name).await?;
        Ok(())
    }

    /// Every managed name, for `broker certs list`.
    pub async fn status(&self) -> Result<Vec<CertStatus>, AcmeError> {
        let rows = self.store.list_certificates().await?;
        Ok(rows.iter().map(CertStatus::from).collect())
    }

    /// Orders `name` (its lock held) for `owner`, storing the certificate or recording the
    /// failure.
    async fn attempt(
        &self,
        name: &str,
        owner: Option<i64>,
        previous: Option<Certificate>,
    ) -> Result<CertStatus, AcmeError> {
        let replaces = if self.ari_offered.load(Ordering::Relaxed) {
            previous
                .as_ref()
                .and_then(|r| ari::identifier(r.chain_pem.as_deref()?))
        } else {
            None
        };
        // Time spent waiting for the budget is not a failure's backoff to double.
        let previous = previous.filter(|r| !waiting(r));
        match self.order(name, owner, replaces).await {
            Ok(row) => {
                self.metrics.acme_issued.increment(1);
                Ok((&row).into())
            }
            Err(e) => {
                self.metrics.acme_failed.increment(1);
                let s = &self.settings;
                let delay = retry_delay(previous.as_ref(), s.retry_min, s.retry_max, jitter());
                warn!(name, error = %e, retry_in_secs = delay, "certificate order failed");
                if let Err(store_error) = self
                    .store
                    .record_certificate_failure(name, owner, &e.to_string(), now() + delay)
                    .await
                {
                    warn!(name, error = %store_error, "could not record the failure");
                    // Only then: a recorded `next_attempt` is the one schedule. Kept always,
                    // this guard (measured from the failure's instant) outlived a next attempt
                    // stored in whole seconds whenever the two straddled a second, and the
                    // retry the log announced in 60 s came a whole `retry_min` later.
                    self.attempted
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(name.to_owned(), Instant::now());
                }
                Err(e)
            }
        }
    }

    /// The order itself: account, challenges, certificate; then serve it and store it.
    async fn order(
        &self,
        name: &str,
        owner: Option<i64>,
        replaces: Option<instant_acme::CertificateIdentifier<'static>>,
    ) -> Result<Certificate, AcmeError> {
        let kind = self.challenge_for(name)?;
        let account = self.account().await?;
        let responders = Responders {
            challenges: &self.challenges,
            dns: self.dns.as_deref(),
            propagation: &self.settings.propagation,
            shared: self.shared.map(|settle| (self.store.as_ref(), settle)),
        };
        info!(name, challenge = %kind, "ordering a certificate");
        let issued = order::issue(
            &account,
            name,
            kind,
            &responders,
            self.settings.order_timeout,
            replaces,
        )
        .await
        .inspect_err(|e| self.notice_account_gone(e))?;
        let key = warren_tls::load_pem(&issued.chain_pem, &issued.key_pem)?;
        let info = warren_tls::cert_info(&issued.chain_pem)?;
        let sealed = self.settings.key.seal(name, issued.key_pem.as_bytes())?;
        // Served first, stored second: a certificate the CA counted against our rate limit is
        // not wasted if the store hiccups.
        self.install(name, Arc::new(key), info.not_after);
        let row = self
            .store
            .put_certificate(
                ACTOR,
                &NewCertificate {
                    name: name.to_owned(),
                    chain_pem: issued.chain_pem,
                    private_key: sealed,
                    not_before: info.not_before,
                    not_after: info.not_after,
                    issuer: info.issuer,
                    challenge: kind.as_str().to_owned(),
                    next_attempt: Some(renew_at(info.not_before, info.not_after, jitter())),
                    owner,
                },
            )
            .await?;
        info!(name, issuer = ?row.issuer, not_after = ?row.not_after, "certificate issued");
        // Where the CA offers renewal information, its window times the renewal instead.
        if let Some(AriPlan::At(at)) = self.ari(&row).await {
            match self.store.reschedule_certificate(name, at).await {
                Ok(Some(moved)) => return Ok(moved),
                Ok(None) => {}
                Err(e) => warn!(name, error = %e, "could not record the CA's renewal window"),
            }
        }
        Ok(row)
    }

    /// DNS-01 for wildcards and when configured; it needs a DNS provider.
    fn challenge_for(&self, name: &str) -> Result<ChallengeKind, AcmeError> {
        let kind = if name.starts_with("*.") {
            ChallengeKind::Dns01
        } else {
            self.settings.challenge
        };
        if kind == ChallengeKind::Dns01 && self.dns.is_none() {
            return Err(AcmeError::NoDnsProvider(name.to_owned()));
        }
        Ok(kind)
    }

    /// The ACME account, restored or created on first use and kept for the process's life.
    async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        let recreate = self.account_gone.swap(false, Ordering::Relaxed);
        if !recreate && let Some(account) = &*slot {
            return Ok(account.clone());
        }
        let account = if recreate {
            account::create(&self.settings, &*self.store)
                .await
                .inspect_err(|_| self.account_gone.store(true, Ordering::Relaxed))?
        } else {
            account::load_or_create(&self.settings, &*self.store).await?
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// If the CA no longer knows our account (a test CA restarted, an account deactivated),
    /// the next attempt creates a new one instead of failing forever.
    fn notice_account_gone(&self, e: &AcmeError) {
        if let AcmeError::Ca(instant_acme::Error::Api(problem)) = e
            && problem
                .r#type
                .as_deref()
                .is_some_and(|t| t.ends_with(":accountDoesNotExist"))
        {
            warn!("the CA does not know our ACME account any more; a new one will be created");
            self.account_gone.store(true, Ordering::Relaxed);
        }
    }

    fn install(&self, name: &str, key: Arc<CertifiedKey>, not_after: i64) {
        self.certs.insert(name, key);
        self.installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), not_after);
    }

    /// Installs stored certificates that differ from what is being served; returns how many.
    /// Stops serving what is installed but no longer stored (another node removed it).
    fn prune(&self, rows: &[Certificate]) {
        let stored: std::collections::HashSet<&str> =
            rows.iter().map(|r| r.name.as_str()).collect();
        let mut installed = self
            .installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        installed.retain(|name, _| {
            let keep = stored.contains(name.as_str());
            if !keep {
                self.certs.remove(name);
            }
            keep
        });
    }

    fn sync(&self, rows: &[Certificate]) -> usize {
        let mut count = 0;
        for row in rows {
            let (Some((chain, sealed)), Some(not_after)) = (row.material(), row.not_after) else {
                continue;
            };
            let current = self
                .installed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&row.name)
                .copied();
            if current == Some(not_after) && self.certs.get_exact(&row.name).is_some() {
                continue;
            }
            let key = self
                .settings
                .key
                .open(&row.name, sealed)
                .and_then(|pem| Ok(warren_tls::load_pem(chain, pem)?));
            match key {
                Ok(key) => {
                    self.install(&row.name, Arc::new(key), not_after);
                    count += 1;
                }
                Err(e) => warn!(name = %row.name, error = %e, "stored certificate is unusable"),
            }
        }
        count
    }

    fn name_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.name_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// `row` holds an unexpired certificate that the edge is serving (installed now if it
    /// was not).
    fn serving(&self, row: &Certificate) -> bool {
        if row.material().is_none() || row.not_after.is_none_or(|t| t <= now()) {
            return false;
        }
        self.sync(std::slice::from_ref(row));
        // Stored but unusable (the key file was replaced?) counts as none: order a new one.
        self.certs.get_exact(&row.name).is_some()
    }

    fn recently_failed(&self, name: &str) -> bool {
        self.attempted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .is_some_and(|t| t.elapsed() < self.settings.retry_min)
    }
}

/// The row's first order waits for the weekly order budget.
fn waiting(row: &Certificate) -> bool {
    CertStatus::from(row).waiting_for_budget()
}

/// The row's last attempt failed and its retry time has not come: the error to return.
fn backing_off(row: &Certificate) -> Option<AcmeError> {
    let (error, until) = (row.last_error.as_ref()?, row.next_attempt?);
    (until > now() && !waiting(row)).then(|| AcmeError::BackingOff {
        name: row.name.clone(),
        until,
        last_error: error.clone(),
    })
}

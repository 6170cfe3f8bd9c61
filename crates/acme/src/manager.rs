//! [`CertManager`]: which names have certificates, when to order, renew or retry, and putting
//! the results where the edge serves them.
//!
//! The store is the source of truth (`next_attempt` per name says when to act next), the
//! `CertStore` is what the edge serves. Locks: a per-name async mutex serialises orders for one
//! name (two callers asking at once get one order); the account slot is an async mutex held
//! across the CA round trip on purpose (concurrent first orders must create one account, not
//! two); the std mutexes guard small maps and are never held across an `.await`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use instant_acme::Account;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use warren_dns::DnsProvider;
use warren_store::{Certificate, NewCertificate, Store, now};
use warren_tls::{CertStore, CertifiedKey, Challenges};

use crate::names::validate_name;
use crate::order::{self, Responders};
use crate::schedule::{jitter, renew_at, retry_delay};
use crate::{AcmeError, AcmeSettings, ChallengeKind, account};

/// Who the store records as having issued certificates.
const ACTOR: &str = "acme";
/// The background task looks at the store at least this often, so certificates renewed by
/// another node sharing the database are picked up.
const MAX_SLEEP: Duration = Duration::from_secs(600);

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
    /// When the manager acts next (renewal, or retry after a failure), Unix seconds.
    pub next_attempt: Option<i64>,
}

impl From<&Certificate> for CertStatus {
    fn from(row: &Certificate) -> Self {
        Self {
            name: row.name.clone(),
            issuer: row.issuer.clone(),
            not_after: row.not_after,
            last_error: row.last_error.clone(),
            next_attempt: row.next_attempt,
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
    name_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Names waiting for the background task ([`CertManager::request`]).
    queue: Mutex<BTreeSet<String>>,
    wake: Notify,
    /// `not_after` of what is installed in the `CertStore`, per name, to install only changes.
    installed: Mutex<HashMap<String, i64>>,
    /// When an attempt for each name last failed: the background task waits `retry_min` after
    /// it even if the store could not record the failure (no tight loop against the CA).
    attempted: Mutex<HashMap<String, Instant>>,
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
            name_locks: Mutex::new(HashMap::new()),
            queue: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
            installed: Mutex::new(HashMap::new()),
            attempted: Mutex::new(HashMap::new()),
        }
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
    /// ([`AcmeError::BackingOff`]). Wildcards (`*.example.com`) are validated with DNS-01.
    pub async fn ensure(&self, name: &str) -> Result<CertStatus, AcmeError> {
        let name = validate_name(name)?;
        let lock = self.name_lock(&name);
        let _one_order_per_name = lock.lock().await;
        let row = self.store.certificate(&name).await?;
        if let Some(row) = &row {
            if row.material().is_some() && row.not_after.is_some_and(|t| t > now()) {
                self.sync(std::slice::from_ref(row));
                if self.certs.get_exact(&name).is_some() {
                    return Ok(row.into());
                }
                // Stored but unusable (the key file was replaced?): order a new one.
            }
            if let (Some(error), Some(until)) = (&row.last_error, row.next_attempt)
                && until > now()
            {
                return Err(AcmeError::BackingOff {
                    name,
                    until,
                    last_error: error.clone(),
                });
            }
        }
        self.attempt(&name, row).await
    }

    /// Queues `name` for [`CertManager::ensure`] by the background task and returns at once:
    /// what the broker calls when a tunnel binds a name. Invalid names are logged there.
    pub fn request(&self, name: &str) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.trim_end_matches('.').to_ascii_lowercase());
        self.wake.notify_one();
    }

    /// Orders a new certificate for `name` now, whatever the state of the current one or of
    /// its backoff; the current one is served until the new one is in.
    pub async fn force_renew(&self, name: &str) -> Result<CertStatus, AcmeError> {
        let name = validate_name(name)?;
        let lock = self.name_lock(&name);
        let _one_order_per_name = lock.lock().await;
        let row = self.store.certificate(&name).await?;
        self.attempt(&name, row).await
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

    /// The background task: works names queued by [`CertManager::request`], renews
    /// certificates when due, retries failures when their backoff expires, and installs
    /// certificates another node stored. Returns when `shutdown` is cancelled; an order in
    /// progress is abandoned (its answers are removed from `Challenges`, but a DNS-01 TXT record
    /// may stay behind: harmless, and replaced by the next attempt's).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        info!(directory = %self.settings.directory_url, "certificate manager running");
        loop {
            let wait = tokio::select! {
                _ = shutdown.cancelled() => break,
                wait = self.tick() => wait,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        info!("certificate manager stopped");
    }

    /// One pass of the background task; returns how long to sleep.
    async fn tick(&self) -> Duration {
        let requested =
            std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        for name in requested {
            match self.ensure(&name).await {
                Ok(_) => {}
                Err(AcmeError::BackingOff { name, until, .. }) => {
                    debug!(%name, until, "requested name is backing off")
                }
                Err(e) => debug!(%name, error = %e, "requested name has no certificate"),
            }
        }
        let rows = match self.store.list_certificates().await {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "certificate manager cannot read the store");
                return self.settings.retry_min;
            }
        };
        self.sync(&rows);
        let mut next = now() + MAX_SLEEP.as_secs() as i64;
        for row in &rows {
            let Some(at) = row.next_attempt else { continue };
            if at > now() {
                next = next.min(at);
                continue;
            }
            if self.recently_failed(&row.name) {
                next = next.min(now() + self.settings.retry_min.as_secs() as i64);
                continue;
            }
            match self.renew_due(&row.name).await {
                Ok(Some(status)) => {
                    info!(name = %status.name, not_after = ?status.not_after, "certificate renewed")
                }
                Ok(None) => {}
                Err(e) => debug!(name = %row.name, error = %e, "renewal failed"),
            }
            // The attempt moved next_attempt into the future; come back right away to pick
            // it up along with anything else that came due meanwhile.
            next = now();
        }
        Duration::from_secs((next - now()).clamp(1, MAX_SLEEP.as_secs() as i64) as u64)
    }

    /// Re-reads `name` under its lock and attempts it if it is still due.
    async fn renew_due(&self, name: &str) -> Result<Option<CertStatus>, AcmeError> {
        let lock = self.name_lock(name);
        let _one_order_per_name = lock.lock().await;
        let row = self.store.certificate(name).await?;
        match row {
            Some(row) if row.next_attempt.is_some_and(|t| t <= now()) => {
                self.attempt(name, Some(row)).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Orders `name` (its lock held), storing the certificate or recording the failure.
    async fn attempt(
        &self,
        name: &str,
        previous: Option<Certificate>,
    ) -> Result<CertStatus, AcmeError> {
        match self.order(name).await {
            Ok(row) => Ok((&row).into()),
            Err(e) => {
                self.attempted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.to_owned(), Instant::now());
                let s = &self.settings;
                let delay = retry_delay(previous.as_ref(), s.retry_min, s.retry_max, jitter());
                warn!(name, error = %e, retry_in_secs = delay, "certificate order failed");
                if let Err(store_error) = self
                    .store
                    .record_certificate_failure(name, &e.to_string(), now() + delay)
                    .await
                {
                    warn!(name, error = %store_error, "could not record the failure");
                }
                Err(e)
            }
        }
    }

    /// The order itself: account, challenges, certificate; then serve it and store it.
    async fn order(&self, name: &str) -> Result<Certificate, AcmeError> {
        let kind = self.challenge_for(name)?;
        let account = self.account().await?;
        let responders = Responders {
            challenges: &self.challenges,
            dns: self.dns.as_deref(),
        };
        info!(name, challenge = %kind, "ordering a certificate");
        let issued = order::issue(
            &account,
            name,
            kind,
            &responders,
            self.settings.order_timeout,
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
                },
            )
            .await?;
        info!(name, issuer = ?row.issuer, not_after = ?row.not_after, "certificate issued");
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

    fn recently_failed(&self, name: &str) -> bool {
        self.attempted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .is_some_and(|t| t.elapsed() < self.settings.retry_min)
    }
}

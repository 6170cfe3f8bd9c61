//! The line every order goes through, and the background task that feeds it.
//!
//! A pass of the background task gathers what wants an order now (names asked for with
//! [`CertManager::request`], certificates due for renewal, failures whose backoff is over,
//! names whose wait for the budget is over), reads the past week's issuances from the store,
//! lets [`OrderBudget::decide`](crate::OrderBudget::decide) choose, places the admitted orders
//! one by one and records the others as waiting. [`CertManager::ensure`] and
//! [`CertManager::force_renew`] use the same line with one name.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use warren_store::now;

use super::{BUDGET_WAIT, CertManager, CertStatus, backing_off};
use crate::AcmeError;
use crate::budget::{Candidate, Issued, Verdict, WINDOW};
use crate::names::validate_name;
use crate::schedule::AriPlan;

/// The background task looks at the store at least this often, so certificates renewed by
/// another node sharing the database are picked up.
const MAX_SLEEP: Duration = Duration::from_secs(600);

impl CertManager {
    /// The background task: works names queued by [`CertManager::request`], renews
    /// certificates when due, retries failures when their backoff expires, looks again at
    /// names waiting for the order budget, and installs certificates another node stored.
    /// Returns when `shutdown` is cancelled; an order in progress is abandoned (its answers are
    /// removed from `Challenges`, but a DNS-01 TXT record may stay behind: harmless, and
    /// replaced by the next attempt's).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        info!(directory = %self.settings.directory_url, budget = ?self.settings.budget, "certificate manager running");
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
        if !self.leading() {
            // Another node orders for the cluster (it hears of every name through the same
            // audit log); this one serves what that one stores.
            match self.store.list_certificates().await {
                Ok(rows) => {
                    self.sync(&rows);
                    self.prune(&rows);
                }
                Err(e) => warn!(error = %e, "certificate manager cannot read the store"),
            }
            return MAX_SLEEP;
        }
        // (order of arrival: the row's id if it has one, so names that waited longest go
        // first; then names new to the store in the order they were asked for)
        let mut wanted: Vec<(i64, Candidate)> = Vec::new();
        for (name, owner) in requested {
            match self.wants_order(&name, owner).await {
                Ok(Some(c)) => wanted.push(c),
                Ok(None) => {}
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
            // A renewal that came due by our clock: the CA's renewal information, where it
            // offers it, may say "not yet" (and when to ask again).
            if row.material().is_some()
                && let Some(AriPlan::At(at)) = self.ari(row).await
            {
                if let Err(e) = self.store.reschedule_certificate(&row.name, at).await {
                    warn!(name = %row.name, error = %e, "could not record the CA's renewal window");
                }
                next = next.min(at);
                continue;
            }
            if !wanted.iter().any(|(_, c)| c.name == row.name) {
                let candidate = Candidate {
                    name: row.name.clone(),
                    owner: row.owner_id,
                    renewal: row.material().is_some(),
                };
                wanted.push((row.id, candidate));
            }
        }
        if wanted.is_empty() {
            return sleep_until(next);
        }
        wanted.sort_by_key(|(order, _)| *order);
        let queue: Vec<Candidate> = wanted.into_iter().map(|(_, c)| c).collect();
        let owners: Vec<Option<i64>> = queue.iter().map(|c| c.owner).collect();
        // What was ordered moved its next_attempt into the future; come back right away to
        // pick it up along with anything else that came due meanwhile.
        let mut next = now();
        let results = self.line(queue, false).await;
        for ((name, result), owner) in results.into_iter().zip(owners) {
            match result {
                Ok(status) => info!(%name, not_after = ?status.not_after, "certificate in place"),
                Err(AcmeError::OverBudget { until, reason, .. }) => {
                    info!(%name, until, %reason, "first order waits for the budget")
                }
                Err(AcmeError::BudgetUnknown(_)) => {
                    // Nothing recorded for it: keep it in line for the next pass.
                    self.queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((name, owner));
                    next = now() + self.settings.retry_min.as_secs() as i64;
                }
                Err(e) => debug!(%name, error = %e, "no new certificate"),
            }
        }
        sleep_until(next)
    }

    /// Whether a requested name wants an order, and its place in line.
    async fn wants_order(
        &self,
        name: &str,
        owner: Option<i64>,
    ) -> Result<Option<(i64, Candidate)>, AcmeError> {
        let name = validate_name(name)?;
        let row = self.store.certificate(&name).await?;
        if let Some(row) = &row {
            if self.serving(row) {
                return Ok(None);
            }
            if let Some(e) = backing_off(row) {
                return Err(e);
            }
        }
        let candidate = Candidate {
            name,
            owner: owner.or(row.as_ref().and_then(|r| r.owner_id)),
            renewal: row.as_ref().is_some_and(|r| r.material().is_some()),
        };
        Ok(Some((row.map_or(i64::MAX, |r| r.id), candidate)))
    }

    /// [`CertManager::line`] for one name.
    pub(super) async fn one(
        &self,
        candidate: Candidate,
        forced: bool,
    ) -> Result<CertStatus, AcmeError> {
        self.line(vec![candidate], forced)
            .await
            .pop()
            .map_or_else(|| Err(AcmeError::Internal("no verdict".into())), |(_, r)| r)
    }

    /// Decides the budget for `queue` and acts on each verdict, in order: orders what it
    /// admits, records the rest as waiting. Each name is re-read under its lock first, since
    /// another caller or node may have got there meanwhile (unless `forced`: an operator's
    /// renewal happens whatever the name's state).
    async fn line(
        &self,
        queue: Vec<Candidate>,
        forced: bool,
    ) -> Vec<(String, Result<CertStatus, AcmeError>)> {
        let _one_decision_at_a_time = self.deciding.lock().await;
        let start = now();
        let verdicts: Vec<Option<Verdict>> =
            match self.store.certificate_issues_since(start - WINDOW).await {
                Ok(events) => {
                    let history: Vec<Issued> = events
                        .iter()
                        .map(|e| Issued {
                            at: e.at,
                            owner: e.user_id,
                        })
                        .collect();
                    let budget = self.settings.budget;
                    budget
                        .decide(start, &history, &queue)
                        .into_iter()
                        .map(Some)
                        .collect()
                }
                Err(e) => {
                    // Renewals never wait; first orders wait for a budget that can be read.
                    warn!(error = %e, "cannot read the order budget's history");
                    queue
                        .iter()
                        .map(|c| c.renewal.then_some(Verdict::Order))
                        .collect()
                }
            };
        let mut results = Vec::with_capacity(queue.len());
        for (c, verdict) in queue.into_iter().zip(verdicts) {
            let result = self.act(&c, verdict, forced).await;
            results.push((c.name, result));
        }
        results
    }

    /// Carries out one verdict, `name`'s lock held.
    async fn act(
        &self,
        c: &Candidate,
        verdict: Option<Verdict>,
        forced: bool,
    ) -> Result<CertStatus, AcmeError> {
        let lock = self.name_lock(&c.name);
        let _one_order_per_name = lock.lock().await;
        let row = self.store.certificate(&c.name).await?;
        if !forced && let Some(row) = &row {
            let due = row.next_attempt.is_none_or(|t| t <= now());
            if self.serving(row) && !(c.renewal && due) {
                return Ok(row.into());
            }
            if let Some(e) = backing_off(row) {
                return Err(e);
            }
        }
        match verdict {
            Some(Verdict::Order) => self.attempt(&c.name, c.owner, row).await,
            Some(Verdict::Wait { until, limit }) => {
                let reason = limit.to_string();
                self.store
                    .record_certificate_wait(
                        &c.name,
                        c.owner,
                        &format!("{BUDGET_WAIT}: {reason}"),
                        until,
                    )
                    .await?;
                Err(AcmeError::OverBudget {
                    name: c.name.clone(),
                    until,
                    reason,
                })
            }
            None => Err(AcmeError::BudgetUnknown(c.name.clone())),
        }
    }
}

/// How long to sleep to wake at `at` (Unix seconds), within [1 s, `MAX_SLEEP`].
fn sleep_until(at: i64) -> Duration {
    Duration::from_secs((at - now()).clamp(1, MAX_SLEEP.as_secs() as i64) as u64)
}

//! Webhooks and their deliveries (see `warren-alerts` for what is sent and how).
//!
//! A webhook belongs to a user (their tunnels' events) or to nobody (a global hook: every
//! tunnel's events, and certificate and DNS alerts). Each event to each hook is a row in
//! `webhook_deliveries`: the delivery task's queue and the tenant's delivery log in one
//! table, so a restart loses no pending delivery and the log cannot disagree with what was
//! sent. Creating and deleting a hook and giving up on a delivery write audit rows
//! (`webhook.create`, `webhook.delete`, `webhook.give_up`); attempts that will be retried only
//! update their row, or a receiver that is down for an hour would flood the log.
//!
//! As in `domains.rs`, the SQL is kept in `const`s and the macro at the bottom only writes the
//! two identical `impl`s.

use crate::{Result, StoreError};

/// A webhook as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Webhook {
    /// Stable id.
    pub id: i64,
    /// Whose tunnels' events it gets; `None` for a global hook.
    pub user_id: Option<i64>,
    /// The owner's name (`None` for a global hook).
    pub user_name: Option<String>,
    /// Where events are POSTed.
    pub url: String,
    /// What deliveries are signed with. Never shown after creation.
    pub secret: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// One event queued for, or delivered to, one webhook.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebhookDelivery {
    /// Stable id (the `X-Warren-Delivery` header).
    pub id: i64,
    /// The webhook.
    pub webhook_id: i64,
    /// `tunnel.down`, `ping`, …
    pub event: String,
    /// The JSON body, exactly as signed and sent.
    pub body: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// When the next attempt is due (Unix milliseconds; retries can be under a second apart
    /// in tests).
    pub next_attempt_ms: i64,
    /// When the last attempt was made (Unix seconds).
    pub last_attempt: Option<i64>,
    /// The HTTP status the receiver last answered, if it answered.
    pub last_status: Option<i64>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When a 2xx was received (Unix seconds).
    pub delivered_at: Option<i64>,
}

/// The outcome of one attempt, to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// When it was made (Unix seconds).
    pub at: i64,
    /// The receiver's status, if it answered.
    pub status: Option<i64>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The state after it: `delivered`, `pending` (retry at `next_attempt_ms`) or `failed`.
    pub state: String,
    /// When to try again (with `pending`).
    pub next_attempt_ms: i64,
}

/// Which webhooks to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFilter {
    /// Every hook (admins, `--all`).
    All,
    /// One user's own hooks.
    User(i64),
    /// The global hooks only.
    Global,
    /// Where an event of a tunnel of this user goes: their hooks and the global ones.
    EventsOf(i64),
}

/// Webhooks and the queue of their deliveries.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Adds a webhook for `user_id` (`None`: global) and audits it.
    async fn create_webhook(
        &self,
        actor: &str,
        user_id: Option<i64>,
        url: &str,
        secret: &str,
    ) -> Result<Webhook>;
    /// Webhooks per `filter`, oldest first.
    async fn list_webhooks(&self, filter: WebhookFilter) -> Result<Vec<Webhook>>;
    /// One webhook.
    async fn webhook(&self, id: i64) -> Result<Option<Webhook>>;
    /// Deletes a webhook with its deliveries (pending ones are never sent) and audits it;
    /// [`StoreError::NoSuchWebhook`] if there is none.
    async fn delete_webhook(&self, actor: &str, id: i64) -> Result<Webhook>;
    /// Queues `body` (event `event`) for webhook `webhook_id`, due at once.
    async fn enqueue_delivery(
        &self,
        webhook_id: i64,
        event: &str,
        body: &str,
    ) -> Result<WebhookDelivery>;
    /// How many deliveries of a webhook are pending (the queue's bound is checked with it).
    async fn pending_deliveries(&self, webhook_id: i64) -> Result<i64>;
    /// Pending deliveries due at `now_ms`, soonest first, at most `limit`.
    async fn due_deliveries(&self, now_ms: i64, limit: i64) -> Result<Vec<WebhookDelivery>>;
    /// Stores one attempt's outcome; a `failed` state (given up) is audited as
    /// `webhook.give_up` on the hook's owner.
    async fn record_attempt(&self, id: i64, attempt: &DeliveryAttempt) -> Result<()>;
    /// The newest `limit` deliveries of a webhook, newest first.
    async fn deliveries(&self, webhook_id: i64, limit: i64) -> Result<Vec<WebhookDelivery>>;
    /// Deletes finished deliveries older than `before` (Unix seconds) and, per webhook, all
    /// but the newest `keep`; returns how many went.
    async fn prune_deliveries(&self, before: i64, keep: i64) -> Result<u64>;
}

mod sql {
    /// `SELECT` of webhooks with their owner's name; a `WHERE` or `ORDER` follows.
    macro_rules! select {
        ($tail:literal) => {
            concat!(
                "SELECT w.id, w.user_id, u.name AS user_name, w.url, w.secret, w.created_at ",
                "FROM webhooks w LEFT JOIN users u ON u.id = w.user_id ",
                $tail
            )
        };
    }
    pub const ALL: &str = select!("ORDER BY w.id");
    pub const BY_USER: &str = select!("WHERE w.user_id = $1 ORDER BY w.id");
    pub const GLOBAL: &str = select!("WHERE w.user_id IS NULL ORDER BY w.id");
    pub const EVENTS_OF: &str = select!("WHERE w.user_id = $1 OR w.user_id IS NULL ORDER BY w.id");
    pub const BY_ID: &str = select!("WHERE w.id = $1");
    pub const INSERT: &str = "INSERT INTO webhooks (user_id, url, secret, created_at) VALUES ($1, $2, $3, $4) \
         RETURNING id";
    pub const DELETE: &str = "DELETE FROM webhooks WHERE id = $1";
    macro_rules! delivery {
        ($tail:literal) => {
            concat!(
                "SELECT id, webhook_id, event, body, state, attempts, created_at, ",
                "next_attempt_ms, last_attempt, last_status, last_error, delivered_at ",
                "FROM webhook_deliveries ",
                $tail
            )
        };
    }
    pub const ENQUEUE: &str = "INSERT INTO webhook_deliveries \
         (webhook_id, event, body, state, attempts, created_at, next_attempt_ms) \
         VALUES ($1, $2, $3, 'pending', 0, $4, $5) RETURNING id";
    pub const DELIVERY: &str = delivery!("WHERE id = $1");
    pub const PENDING: &str =
        "SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND state = 'pending'";
    pub const DUE: &str = delivery!(
        "WHERE state = 'pending' AND next_attempt_ms <= $1 ORDER BY next_attempt_ms, id LIMIT $2"
    );
    pub const OF_HOOK: &str = delivery!("WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2");
    pub const ATTEMPT: &str = "UPDATE webhook_deliveries SET attempts = attempts + 1, \
         last_attempt = $2, last_status = $3, last_error = $4, state = $5, next_attempt_ms = $6, \
         delivered_at = CASE WHEN $5 = 'delivered' THEN $2 ELSE delivered_at END WHERE id = $1";
    pub const PRUNE_OLD: &str =
        "DELETE FROM webhook_deliveries WHERE state <> 'pending' AND created_at < $1";
    /// Per webhook, finished rows below its `keep`-th newest row.
    pub const PRUNE_MANY: &str = "DELETE FROM webhook_deliveries WHERE state <> 'pending' \
         AND id < (SELECT d.id FROM webhook_deliveries d \
                   WHERE d.webhook_id = webhook_deliveries.webhook_id \
                   ORDER BY d.id DESC LIMIT 1 OFFSET $1)";
}

macro_rules! impl_webhooks {
    ($ty:ty, $begin:literal) => {
        #[async_trait::async_trait]
        impl WebhookStore for $ty {
            async fn create_webhook(
                &self,
                actor: &str,
                user_id: Option<i64>,
                url: &str,
                secret: &str,
            ) -> Result<Webhook> {
                let mut tx = self.writer.begin_with($begin).await?;
                let (id,) = sqlx::query_as::<_, (i64,)>(sql::INSERT)
                    .bind(user_id)
                    .bind(url)
                    .bind(secret)
                    .bind(crate::now())
                    .fetch_one(&mut *tx)
                    .await?;
                let hook = sqlx::query_as::<_, Webhook>(sql::BY_ID)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                let scope = if user_id.is_none() { "global " } else { "" };
                audit!(
                    tx,
                    actor,
                    crate::AuditAction::WebhookCreate,
                    &format!("webhook {id}"),
                    user_id,
                    &format!("{scope}to {}", redact(url))
                );
                tx.commit().await?;
                Ok(hook)
            }

            async fn list_webhooks(&self, filter: WebhookFilter) -> Result<Vec<Webhook>> {
                let q = match filter {
                    WebhookFilter::All => sqlx::query_as::<_, Webhook>(sql::ALL),
                    WebhookFilter::Global => sqlx::query_as::<_, Webhook>(sql::GLOBAL),
                    WebhookFilter::User(id) => sqlx::query_as::<_, Webhook>(sql::BY_USER).bind(id),
                    WebhookFilter::EventsOf(id) => {
                        sqlx::query_as::<_, Webhook>(sql::EVENTS_OF).bind(id)
                    }
                };
                Ok(q.fetch_all(&self.pool).await?)
            }

            async fn webhook(&self, id: i64) -> Result<Option<Webhook>> {
                Ok(sqlx::query_as::<_, Webhook>(sql::BY_ID)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn delete_webhook(&self, actor: &str, id: i64) -> Result<Webhook> {
                let mut tx = self.writer.begin_with($begin).await?;
                let hook = sqlx::query_as::<_, Webhook>(sql::BY_ID)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(StoreError::NoSuchWebhook(id))?;
                sqlx::query(sql::DELETE).bind(id).execute(&mut *tx).await?;
                audit!(
                    tx,
                    actor,
                    crate::AuditAction::WebhookDelete,
                    &format!("webhook {id}"),
                    hook.user_id,
                    &format!("to {}", redact(&hook.url))
                );
                tx.commit().await?;
                Ok(hook)
            }

            async fn enqueue_delivery(
                &self,
                webhook_id: i64,
                event: &str,
                body: &str,
            ) -> Result<WebhookDelivery> {
                let mut tx = self.writer.begin_with($begin).await?;
                let now = crate::now();
                let (id,) = sqlx::query_as::<_, (i64,)>(sql::ENQUEUE)
                    .bind(webhook_id)
                    .bind(event)
                    .bind(body)
                    .bind(now)
                    .bind(now_ms())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| match &e {
                        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                            StoreError::NoSuchWebhook(webhook_id)
                        }
                        _ => e.into(),
                    })?;
                let row = sqlx::query_as::<_, WebhookDelivery>(sql::DELIVERY)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn pending_deliveries(&self, webhook_id: i64) -> Result<i64> {
                let (n,) = sqlx::query_as::<_, (i64,)>(sql::PENDING)
                    .bind(webhook_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn due_deliveries(
                &self,
                now_ms: i64,
                limit: i64,
            ) -> Result<Vec<WebhookDelivery>> {
                Ok(sqlx::query_as::<_, WebhookDelivery>(sql::DUE)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn record_attempt(&self, id: i64, attempt: &DeliveryAttempt) -> Result<()> {
                let mut tx = self.writer.begin_with($begin).await?;
                sqlx::query(sql::ATTEMPT)
                    .bind(id)
                    .bind(attempt.at)
                    .bind(attempt.status)
                    .bind(&attempt.error)
                    .bind(&attempt.state)
                    .bind(attempt.next_attempt_ms)
                    .execute(&mut *tx)
                    .await?;
                if attempt.state == "failed" {
                    let row = sqlx::query_as::<_, WebhookDelivery>(sql::DELIVERY)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some(row) = row {
                        let hook = sqlx::query_as::<_, Webhook>(sql::BY_ID)
                            .bind(row.webhook_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                        let detail = format!(
                            "delivery {id} ({}) after {} attempts: {}",
                            row.event,
                            row.attempts,
                            attempt.error.as_deref().unwrap_or("no 2xx answer")
                        );
                        audit!(
                            tx,
                            "broker",
                            crate::AuditAction::WebhookGiveUp,
                            &format!("webhook {}", row.webhook_id),
                            hook.and_then(|h| h.user_id),
                            &detail
                        );
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn deliveries(
                &self,
                webhook_id: i64,
                limit: i64,
            ) -> Result<Vec<WebhookDelivery>> {
                Ok(sqlx::query_as::<_, WebhookDelivery>(sql::OF_HOOK)
                    .bind(webhook_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn prune_deliveries(&self, before: i64, keep: i64) -> Result<u64> {
                let old = sqlx::query(sql::PRUNE_OLD)
                    .bind(before)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                let many = sqlx::query(sql::PRUNE_MANY)
                    .bind(keep.max(1) - 1)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                Ok(old + many)
            }
        }
    };
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A URL for the audit log: scheme, host and port only. Paths and queries of webhook URLs
/// often carry a receiver's own token (`/hooks/T0K3N`), and the audit log is readable by more
/// people than the hook's owner.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}")
}

use crate::backend::{PostgresStore, SqliteStore};

impl_webhooks!(SqliteStore, "BEGIN IMMEDIATE");
impl_webhooks!(PostgresStore, "BEGIN");

#[cfg(test)]
mod tests {
    #[test]
    fn redact_keeps_scheme_host_and_port() {
        assert_eq!(
            super::redact("https://u:pw@hooks.example.com:8443/T0K3N?x=1"),
            "https://hooks.example.com:8443"
        );
        assert_eq!(super::redact("http://10.0.0.1"), "http://10.0.0.1");
    }
}

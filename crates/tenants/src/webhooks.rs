//! Webhooks: where a tenant's tunnel alerts go (and, for the operator's global hooks, every
//! tunnel's and the broker's own certificate and DNS alerts). What is sent, and how, is
//! `warren-alerts`'; who may register, see, test and delete which hook is decided here for
//! the API and the CLI alike: another tenant's hook is a 404, a global one is an admin's
//! alone, and a URL that points into a private network is a 422 naming `url`.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;
use warren_alerts::guard;
use warren_store::{Webhook, WebhookDelivery, WebhookFilter};

use crate::{Caller, Result, Scope, ServiceError, Tenants};

/// The longest webhook URL accepted.
const MAX_URL: usize = 2000;
/// The most deliveries one listing returns.
pub const MAX_DELIVERIES: i64 = 200;

/// What registering webhooks needs from the broker's configuration.
#[derive(Debug, Clone, Default)]
pub struct WebhookSettings {
    /// `webhook_allow_private`: accept URLs on loopback and private networks.
    pub allow_private: bool,
}

/// A webhook as the API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WebhookView {
    /// Stable id.
    pub id: i64,
    /// Where events are POSTed.
    pub url: String,
    /// A global hook (every tunnel's events, certificate and DNS alerts).
    pub global: bool,
    /// Whose tunnels' events it gets (absent for a global hook).
    pub user: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// The signing secret: in the answer to its creation only, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One delivery of a webhook: its log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The `X-Warren-Delivery` header.
    pub id: i64,
    /// `tunnel.up`, `tunnel.down`, `ping`, …
    pub event: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// Unix seconds, when queued.
    pub created_at: i64,
    /// Unix seconds of the last attempt.
    pub last_attempt: Option<i64>,
    /// The receiver's last HTTP status.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Unix seconds, when a 2xx came back.
    pub delivered_at: Option<i64>,
    /// Unix milliseconds of the next attempt (pending deliveries).
    pub next_attempt_ms: Option<i64>,
    /// The JSON body sent.
    pub body: String,
}

fn view(h: Webhook, secret: bool) -> WebhookView {
    WebhookView {
        id: h.id,
        global: h.user_id.is_none(),
        user: h.user_name,
        created_at: h.created_at,
        secret: secret.then_some(h.secret),
        url: h.url,
    }
}

fn delivery_view(d: WebhookDelivery) -> DeliveryView {
    DeliveryView {
        next_attempt_ms: (d.state == "pending").then_some(d.next_attempt_ms),
        id: d.id,
        event: d.event,
        state: d.state,
        attempts: d.attempts,
        created_at: d.created_at,
        last_attempt: d.last_attempt,
        last_status: d.last_status,
        last_error: d.last_error,
        delivered_at: d.delivered_at,
        body: d.body,
    }
}

impl Tenants {
    /// Lets this service accept webhook URLs per `settings`.
    pub fn with_webhooks(mut self, settings: WebhookSettings) -> Self {
        self.webhooks = Arc::new(settings);
        self
    }

    /// The caller's webhooks, or every hook (global ones included) with `all` (admin).
    pub async fn webhooks(&self, caller: &Caller, all: bool) -> Result<Vec<WebhookView>> {
        caller.require(Scope::Read)?;
        let filter = if all {
            caller.require(Scope::Admin)?;
            WebhookFilter::All
        } else {
            WebhookFilter::User(caller.user.id)
        };
        Ok(self
            .store
            .list_webhooks(filter)
            .await?
            .into_iter()
            .map(|h| view(h, false))
            .collect())
    }

    /// Registers a webhook for `user` (default: the caller), or a global one (admin). The
    /// answer holds the signing secret, shown this once.
    pub async fn create_webhook(
        &self,
        caller: &Caller,
        url: &str,
        user: Option<&str>,
        global: bool,
    ) -> Result<WebhookView> {
        caller.require(Scope::Write)?;
        let owner = match (global, user) {
            (true, Some(_)) => {
                return Err(ServiceError::invalid(
                    "global",
                    "a global webhook belongs to no user: give global or user, not both",
                ));
            }
            (true, None) => {
                caller.require(Scope::Admin)?;
                None
            }
            (false, Some(name)) => Some(self.find_user(caller, name).await?.id),
            (false, None) if caller.user.id == 0 => {
                return Err(ServiceError::invalid(
                    "user",
                    "say whose tunnels' events it gets (a user), or make it global",
                ));
            }
            (false, None) => Some(caller.user.id),
        };
        let url = self.check_webhook_url(url).await?;
        let secret = warren_alerts::generate_secret();
        let hook = self
            .store
            .create_webhook(&caller.actor(), owner, &url, &secret)
            .await?;
        Ok(view(hook, true))
    }

    /// `url` if it may be a webhook: http or https, and (unless private receivers are
    /// allowed) a host that resolves to public addresses only; a 422 on `url` otherwise.
    async fn check_webhook_url(&self, url: &str) -> Result<String> {
        let url = url.trim();
        if url.len() > MAX_URL {
            return Err(ServiceError::invalid(
                "url",
                format!("at most {MAX_URL} characters"),
            ));
        }
        let parsed = guard::parse(url).map_err(|e| ServiceError::invalid("url", e.to_string()))?;
        guard::check(&parsed, self.webhooks.allow_private)
            .await
            .map_err(|e| ServiceError::invalid("url", e.to_string()))?;
        Ok(parsed.to_string())
    }

    /// The hook `id` if the caller may see it (404 otherwise): their own, or any for an admin.
    async fn own_webhook(&self, caller: &Caller, id: i64) -> Result<Webhook> {
        let not_found = || ServiceError::NotFound(format!("no webhook with id {id}"));
        let hook = self.store.webhook(id).await?.ok_or_else(not_found)?;
        let visible = match hook.user_id {
            Some(owner) => caller.sees(owner),
            None => caller.is_admin(),
        };
        if visible { Ok(hook) } else { Err(not_found()) }
    }

    /// Deletes a webhook; its pending deliveries are never sent.
    pub async fn delete_webhook(&self, caller: &Caller, id: i64) -> Result<WebhookView> {
        caller.require(Scope::Read)?;
        self.own_webhook(caller, id).await?;
        caller.require(Scope::Write)?;
        let hook = self.store.delete_webhook(&caller.actor(), id).await?;
        Ok(view(hook, false))
    }

    /// The newest deliveries of a webhook (at most `limit`, default 50), newest first.
    pub async fn webhook_deliveries(
        &self,
        caller: &Caller,
        id: i64,
        limit: Option<i64>,
    ) -> Result<Vec<DeliveryView>> {
        caller.require(Scope::Read)?;
        let limit = limit.unwrap_or(50);
        if !(1..=MAX_DELIVERIES).contains(&limit) {
            return Err(ServiceError::invalid(
                "limit",
                format!("use 1 to {MAX_DELIVERIES}"),
            ));
        }
        let hook = self.own_webhook(caller, id).await?;
        Ok(self
            .store
            .deliveries(hook.id, limit)
            .await?
            .into_iter()
            .map(delivery_view)
            .collect())
    }

    /// Queues a `ping` to a webhook; the running broker sends it within a second. The answer
    /// is the queued delivery: follow it in the delivery log.
    pub async fn ping_webhook(&self, caller: &Caller, id: i64) -> Result<DeliveryView> {
        caller.require(Scope::Read)?;
        let hook = self.own_webhook(caller, id).await?;
        caller.require(Scope::Write)?;
        let body = warren_alerts::event::ping(hook.id, warren_store::now()).to_string();
        let d = self
            .store
            .enqueue_delivery(hook.id, warren_alerts::EventKind::Ping.as_str(), &body)
            .await?;
        Ok(delivery_view(d))
    }
}

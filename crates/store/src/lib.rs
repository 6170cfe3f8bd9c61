//! Warren's persistent state, behind one [`Store`] trait.
//!
//! Everything a restart must not lose lives here: users, their SSH keys, reserved names and
//! their access rules, ACME accounts and certificates, the nodes sharing the database and which
//! of them holds each live tunnel name, and an append-only audit log. Two backends implement the
//! same trait with the same SQL (atuin's pattern): SQLite for the zero-setup single box, Postgres for production and several nodes.
//! Each has its own migrations under `migrations/{sqlite,postgres}`, applied by [`open`].
//!
//! Every mutation writes its audit event in the same transaction, so the log is complete and a
//! running broker can tail it ([`Store::events_since`]) to apply changes made by the admin CLI
//! from another process without a restart.
#![warn(missing_docs)]

mod action;
#[macro_use]
mod backend;
mod accounts;
mod domains;
mod error;
mod nodes;
mod notices;
mod probe;
mod rules;
mod types;
mod webhooks;

pub use accounts::{AccountStore, ApiToken, LoginSession, NewToken, Quotas, SigningKey};
pub use action::{AuditAction, UnknownAction};
pub use backend::{PostgresStore, SqliteStore};
pub use domains::{CustomDomain, DomainCheck, DomainFilter, DomainStore};
pub use error::StoreError;
pub use nodes::{
    Claim, Hold, HoldEvents, HoldRoute, Job, Join, Lease, NewNode, NodeRow, NodeStore,
};
pub use probe::{Schema, probe};
pub use rules::{BasicUser, IpRule, NewShare, RuleStore, Rules, ShareLink};
pub use types::{
    AcmeAccount, AuditEvent, Certificate, NewCertificate, NewKey, Reservation, SshKey, User,
};
pub use webhooks::{
    DeliveryAttempt, Webhook, WebhookDelivery, WebhookFilter, WebhookStore, now_ms,
    redact as redact_url,
};

use std::sync::Arc;

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The persistent state of a broker. Implementations are cheap to share (`Arc<dyn Store>`) and
/// safe to use from several processes at once (the server and the admin CLI).
///
/// `actor` on mutations names who did it (`cli`, `ssh:alice`) and goes to the audit log.
#[async_trait::async_trait]
pub trait Store:
    AccountStore + RuleStore + DomainStore + WebhookStore + NodeStore + Send + Sync + 'static
{
    /// Creates a user; names are unique.
    async fn create_user(&self, actor: &str, name: &str, is_admin: bool) -> Result<User>;
    /// All users, oldest first.
    async fn list_users(&self) -> Result<Vec<User>>;
    /// One user by name.
    async fn user_by_name(&self, name: &str) -> Result<Option<User>>;
    /// One user by id.
    async fn user_by_id(&self, id: i64) -> Result<Option<User>>;
    /// Disables or re-enables a user. A running broker drops a disabled user's sessions.
    async fn set_user_disabled(&self, actor: &str, name: &str, disabled: bool) -> Result<User>;

    /// Registers a public key for a user; a fingerprint can belong to one user only.
    async fn add_key(&self, actor: &str, user: &str, key: &NewKey) -> Result<SshKey>;
    /// Keys of one user, or of everyone when `user` is `None`.
    async fn list_keys(&self, user: Option<&str>) -> Result<Vec<SshKey>>;
    /// Removes a key by fingerprint; returns what was removed.
    async fn remove_key(&self, actor: &str, fingerprint: &str) -> Result<SshKey>;
    /// The key with this fingerprint and its owner: the authentication lookup.
    async fn key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<(SshKey, User)>>;

    /// Reserves `name` for `user`, serving `kind` (`http`, `tls` or `tcp`). Reserving a name the
    /// user already holds is a no-op that returns the existing reservation (whatever its kind); a
    /// name held by someone else is [`StoreError::NameTaken`].
    async fn reserve(&self, actor: &str, user: &str, name: &str, kind: &str)
    -> Result<Reservation>;
    /// Releases a reservation; returns what was released.
    async fn release(&self, actor: &str, name: &str) -> Result<Reservation>;
    /// The reservation of one name, if any.
    async fn reservation(&self, name: &str) -> Result<Option<Reservation>>;
    /// Reservations of one user, or of everyone when `user` is `None`.
    async fn list_reservations(&self, user: Option<&str>) -> Result<Vec<Reservation>>;

    /// Appends an event that is not tied to a mutation above (a tunnel bound, a name refused).
    async fn record(&self, event: &AuditEvent) -> Result<i64>;
    /// Events with an id above `after`, oldest first, at most `limit`.
    async fn events_since(&self, after: i64, limit: i64) -> Result<Vec<AuditEvent>>;
    /// The id of the newest event (0 when there is none): where a tail starts.
    async fn last_event_id(&self) -> Result<i64>;

    /// The ACME account stored for a CA directory, if any.
    async fn acme_account(&self, directory_url: &str) -> Result<Option<AcmeAccount>>;
    /// Stores the account for a CA directory, replacing a previous one (the last writer wins:
    /// two nodes creating an account at once both end up using the stored one on next start).
    /// `credentials` is opaque: the caller encrypts it.
    async fn put_acme_account(
        &self,
        actor: &str,
        directory_url: &str,
        credentials: &str,
    ) -> Result<AcmeAccount>;

    /// Stores an issued certificate, replacing the previous one for the name in one statement
    /// (readers see the old or the new certificate, never a mix), and clears its last error.
    async fn put_certificate(&self, actor: &str, cert: &NewCertificate) -> Result<Certificate>;
    /// The row for one certificate name, if any.
    async fn certificate(&self, name: &str) -> Result<Option<Certificate>>;
    /// Every certificate row, by name.
    async fn list_certificates(&self) -> Result<Vec<Certificate>>;
    /// Forgets a certificate name; returns what was removed.
    async fn delete_certificate(&self, actor: &str, name: &str) -> Result<Certificate>;
    /// Records a failed order for `name`: sets its last error, the attempt time (now) and when to
    /// try again, leaving any stored certificate untouched (it keeps being served). Creates the
    /// row, without a certificate, when the name has none yet. Not audited: retries would flood
    /// the log.
    /// `owner` replaces the row's owner.
    async fn record_certificate_failure(
        &self,
        name: &str,
        owner: Option<i64>,
        error: &str,
        next_attempt: i64,
    ) -> Result<Certificate>;
    /// Records that a first order for `name` is held back (the weekly order budget): sets its
    /// last error to `reason`, its next attempt and its owner, creating the row when the name has
    /// none yet. Unlike a failure it leaves `last_attempt` alone, since nothing was asked of the
    /// CA, so it does not lengthen the name's failure backoff. Not audited.
    async fn record_certificate_wait(
        &self,
        name: &str,
        owner: Option<i64>,
        reason: &str,
        next_attempt: i64,
    ) -> Result<Certificate>;
    /// Moves `name`'s next look to `next_attempt` and nothing else (the CA's renewal
    /// information moved it); `None` when the name has no row. Not audited: it happens on
    /// every reading of that information.
    async fn reschedule_certificate(
        &self,
        name: &str,
        next_attempt: i64,
    ) -> Result<Option<Certificate>>;
    /// The `cert.issue` events (one per certificate stored by [`Store::put_certificate`]) at or
    /// after `since`, oldest first; `user_id` is the certificate's owner. The order budget is
    /// derived from them: the audit log is append-only, so a deleted certificate still counts
    /// for the week the CA counts it, and a restart forgets nothing.
    async fn certificate_issues_since(&self, since: i64) -> Result<Vec<AuditEvent>>;
}

/// Postgres connections a store keeps at most unless told otherwise (`database_pool`). Besides
/// them a node holds one for `LISTEN` and one for the ACME lease ([`EXTRA_CONNECTIONS`]).
pub const DEFAULT_POOL: u32 = 16;

/// Postgres connections a node holds outside its pool: the one listening for notifications
/// (holds and challenges alike) and the ACME lease's advisory lock.
pub const EXTRA_CONNECTIONS: u32 = 2;

/// Opens the store named by `url` (`sqlite://PATH` or `postgres://…`), creating a SQLite file if
/// missing, and applies pending migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_pooled(url, DEFAULT_POOL).await
}

/// As [`open`], with at most `pool` pooled connections to Postgres (SQLite's pools are fixed:
/// one writer, eight readers).
pub async fn open_pooled(url: &str, pool: u32) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::open(url, pool).await?))
    } else {
        Err(StoreError::BadUrl(url.to_owned()))
    }
}

/// Seconds since the Unix epoch; the store keeps times as plain integers on both backends.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

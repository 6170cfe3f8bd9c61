//! Accounts for the API and the console: passwords, quotas, API tokens, login sessions, the
//! keys that sign session cookies, and the first admin's one-time setup link.
//!
//! The SQL is kept in `const`s beside the trait (readable and searchable, unlike SQL inside a
//! macro body); the macro at the bottom only writes the two identical `impl`s of short methods.

use crate::{AuditAction, AuditEvent, Result, StoreError, User};

/// Per-user quotas; `None` means the broker's configured default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Quotas {
    /// Names the user may hold reserved.
    pub max_reservations: Option<i64>,
    /// Live tunnels at once.
    pub max_tunnels: Option<i64>,
    /// Concurrent visitor connections per tunnel.
    pub max_visitor_connections: Option<i64>,
    /// Bytes per second each way per tunnel; 0 for no limit.
    pub max_tunnel_bytes_per_sec: Option<i64>,
}

/// An API token as stored: never the token itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiToken {
    /// Stable id.
    pub id: i64,
    /// Owner's id.
    pub user_id: i64,
    /// Unique per user, chosen by them ("ci", "laptop").
    pub name: String,
    /// The first characters of the token (`wrn_AbCd`), so its owner can tell tokens apart.
    pub hint: String,
    /// `read`, `write` or `admin`.
    pub scope: String,
    /// Unix seconds; `None` for a token that does not expire.
    pub expires_at: Option<i64>,
    /// Unix seconds of the last request made with it (updated at most once a minute).
    pub last_used_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A token to store, hashed by the caller.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Owner's id.
    pub user_id: i64,
    /// Unique per user.
    pub name: String,
    /// Hex SHA-256 of the whole token.
    pub hash: String,
    /// The first characters of the token.
    pub hint: String,
    /// `read`, `write` or `admin`.
    pub scope: String,
    /// Unix seconds, or `None`.
    pub expires_at: Option<i64>,
}

/// A console sign-in, named by the session cookie.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LoginSession {
    /// Random id carried in the cookie's JWT.
    pub id: String,
    /// Who signed in.
    pub user_id: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A key that signs (the newest) or still verifies (retired, until its sessions expire)
/// session cookies.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKey {
    /// Stable id; the JWT's `kid`.
    pub id: i64,
    /// The HMAC secret, base64.
    pub secret: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` while it is the signing key.
    pub retired_at: Option<i64>,
}

/// Accounts: the part of the store the API's authentication stands on.
#[async_trait::async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Sets (or with `None` clears) a user's argon2id password hash.
    async fn set_password(&self, actor: &str, user: &str, hash: Option<&str>) -> Result<User>;
    /// The user and their password hash, for a login attempt.
    async fn password_of(&self, user: &str) -> Result<Option<(User, Option<String>)>>;
    /// Whether any admin has a password (if none does, `broker serve` offers the setup link).
    async fn admin_has_password(&self) -> Result<bool>;

    /// A user's quotas.
    async fn quotas(&self, user_id: i64) -> Result<Quotas>;
    /// Replaces a user's quotas.
    async fn set_quotas(&self, actor: &str, user: &str, quotas: &Quotas) -> Result<Quotas>;

    /// Stores a token; a name the user already uses is [`StoreError::TokenExists`].
    async fn create_token(&self, actor: &str, token: &NewToken) -> Result<ApiToken>;
    /// Tokens of one user (or of everyone), oldest first.
    async fn list_tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiToken>>;
    /// The token with this hash and its owner: the authentication lookup.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<(ApiToken, User)>>;
    /// Records a use of the token (not audited: it would log every request).
    async fn touch_token(&self, id: i64, at: i64) -> Result<()>;
    /// Revokes (deletes) a token; returns what was revoked.
    async fn revoke_token(&self, actor: &str, id: i64) -> Result<ApiToken>;

    /// Stores a new console session.
    async fn create_login_session(&self, actor: &str, session: &LoginSession) -> Result<()>;
    /// One session, if it exists (expired ones included: the caller checks `expires_at`).
    async fn login_session(&self, id: &str) -> Result<Option<LoginSession>>;
    /// Ends one session.
    async fn end_login_session(&self, actor: &str, id: &str) -> Result<()>;
    /// Ends every session of a user ("log out everywhere", a password change, a disable);
    /// returns how many there were.
    async fn end_login_sessions_of(&self, actor: &str, user_id: i64) -> Result<u64>;

    /// Every signing key not retired before `since`, newest first.
    async fn signing_keys(&self, since: i64) -> Result<Vec<SigningKey>>;
    /// Retires the current signing key(s) and stores `secret` as the new one.
    async fn rotate_signing_key(&self, actor: &str, secret: &str) -> Result<SigningKey>;
    /// Stores a signing key only if there is none (first start); returns the newest key.
    async fn ensure_signing_key(&self, secret: &str) -> Result<SigningKey>;

    /// Stores a one-time setup link's hash.
    async fn create_setup_token(&self, hash: &str, expires_at: i64) -> Result<()>;
    /// Uses a setup link: true exactly once, for an unexpired link.
    async fn use_setup_token(&self, hash: &str, now: i64) -> Result<bool>;

    /// Audit events newest first, below the cursor `before` (an event id), of one user or of
    /// everyone: the API's paginated audit log.
    async fn events_page(
        &self,
        user_id: Option<i64>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>>;

    /// For every subject with an event of one of `actions`, the newest such event: where each
    /// name's DNS records were last left, read at start to withdraw records of names released
    /// while the broker was down.
    async fn last_events_by_subject(&self, actions: &[AuditAction]) -> Result<Vec<AuditEvent>>;

    /// The newest event about `subject` with one of `actions` (none given: `None`): the state
    /// a name's DNS records were last left in, say, which the API shows its owner.
    async fn last_event_about(
        &self,
        subject: &str,
        actions: &[AuditAction],
    ) -> Result<Option<AuditEvent>>;
}

const TOKEN_COLUMNS: &str = "id, user_id, name, hint, scope, expires_at, last_used_at, created_at";

mod sql {
    pub const SET_PASSWORD: &str = "UPDATE users SET password_hash = $1 WHERE name = $2 \
         RETURNING id, name, is_admin, disabled, created_at";
    pub const PASSWORD_OF: &str = "SELECT password_hash FROM users WHERE id = $1";
    pub const ADMIN_HAS_PASSWORD: &str =
        "SELECT COUNT(*) FROM users WHERE is_admin AND password_hash IS NOT NULL";
    pub const QUOTAS: &str = "SELECT max_reservations, max_tunnels, max_visitor_connections, \
         max_tunnel_bytes_per_sec FROM users WHERE id = $1";
    pub const SET_QUOTAS: &str = "UPDATE users SET max_reservations = $1, max_tunnels = $2, \
         max_visitor_connections = $3, max_tunnel_bytes_per_sec = $4 WHERE name = $5 \
         RETURNING max_reservations, max_tunnels, max_visitor_connections, max_tunnel_bytes_per_sec";
    pub const USER_ID: &str = "SELECT id FROM users WHERE name = $1";
    pub const CREATE_TOKEN: &str = "INSERT INTO api_tokens \
         (user_id, name, hash, hint, scope, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         RETURNING id, user_id, name, hint, scope, expires_at, last_used_at, created_at";
    pub const TOUCH_TOKEN: &str = "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2";
    pub const REVOKE_TOKEN: &str = "DELETE FROM api_tokens WHERE id = $1 \
         RETURNING id, user_id, name, hint, scope, expires_at, last_used_at, created_at";
    pub const CREATE_SESSION: &str = "INSERT INTO login_sessions (id, user_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4)";
    pub const SESSION: &str =
        "SELECT id, user_id, created_at, expires_at FROM login_sessions WHERE id = $1";
    pub const END_SESSION: &str = "DELETE FROM login_sessions WHERE id = $1 RETURNING user_id";
    pub const END_SESSIONS_OF: &str = "DELETE FROM login_sessions WHERE user_id = $1";
    pub const SIGNING_KEYS: &str = "SELECT id, secret, created_at, retired_at FROM signing_keys \
         WHERE retired_at IS NULL OR retired_at >= $1 ORDER BY id DESC";
    pub const RETIRE_KEYS: &str =
        "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL";
    pub const ADD_KEY: &str = "INSERT INTO signing_keys (secret, created_at) VALUES ($1, $2) \
         RETURNING id, secret, created_at, retired_at";
    pub const NEWEST_KEY: &str = "SELECT id, secret, created_at, retired_at FROM signing_keys \
         WHERE retired_at IS NULL ORDER BY id DESC LIMIT 1";
    pub const CREATE_SETUP: &str = "INSERT INTO setup_tokens (hash, expires_at) VALUES ($1, $2)";
    pub const USE_SETUP: &str = "UPDATE setup_tokens SET used_at = $1 \
         WHERE hash = $2 AND used_at IS NULL AND expires_at > $1";
    pub const EVENTS_PAGE: &str = "SELECT id, at, actor, action, subject, user_id, detail \
         FROM audit_events WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3";

    /// The newest event of each subject among those with one of `n` actions (`$1`…).
    pub fn last_events_by_subject(n: usize) -> String {
        format!(
            "SELECT id, at, actor, action, subject, user_id, detail FROM audit_events \
             WHERE id IN (SELECT MAX(id) FROM audit_events WHERE action IN ({}) \
             GROUP BY subject) ORDER BY id",
            placeholders(1, n)
        )
    }

    /// The newest of one subject's events with one of `n` actions (`$2`…), by the index on
    /// `(subject, id)`.
    pub fn last_event_about(n: usize) -> String {
        format!(
            "SELECT id, at, actor, action, subject, user_id, detail FROM audit_events \
             WHERE subject = $1 AND action IN ({}) ORDER BY id DESC LIMIT 1",
            placeholders(2, n)
        )
    }

    /// `$first, …` for `n` bound values.
    fn placeholders(first: usize, n: usize) -> String {
        (first..first + n)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn token_select(tail: &str) -> String {
    format!("SELECT {TOKEN_COLUMNS} FROM api_tokens {tail}")
}

macro_rules! impl_accounts {
    ($ty:ty, $begin:literal) => {
        #[async_trait::async_trait]
        impl AccountStore for $ty {
            async fn set_password(
                &self,
                actor: &str,
                user: &str,
                hash: Option<&str>,
            ) -> Result<User> {
                let mut tx = self.writer.begin_with($begin).await?;
                let u = sqlx::query_as::<_, User>(sql::SET_PASSWORD)
                    .bind(hash)
                    .bind(user)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchUser(user.to_owned()))?;
                let detail = if hash.is_some() { "set" } else { "cleared" };
                audit!(
                    tx,
                    actor,
                    crate::AuditAction::UserPasswd,
                    user,
                    Some(u.id),
                    detail
                );
                tx.commit().await?;
                Ok(u)
            }

            async fn password_of(&self, user: &str) -> Result<Option<(User, Option<String>)>> {
                let Some(u) = self.user_by_name(user).await? else {
                    return Ok(None);
                };
                let (hash,): (Option<String>,) = sqlx::query_as(sql::PASSWORD_OF)
                    .bind(u.id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(Some((u, hash)))
            }

            async fn admin_has_password(&self) -> Result<bool> {
                let (n,): (i64,) = sqlx::query_as(sql::ADMIN_HAS_PASSWORD)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }

            async fn quotas(&self, user_id: i64) -> Result<Quotas> {
                Ok(sqlx::query_as::<_, Quotas>(sql::QUOTAS)
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .unwrap_or_default())
            }

            async fn set_quotas(&self, actor: &str, user: &str, q: &Quotas) -> Result<Quotas> {
                let mut tx = self.writer.begin_with($begin).await?;
                let (id,): (i64,) = sqlx::query_as(sql::USER_ID)
                    .bind(user)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchUser(user.to_owned()))?;
                let row = sqlx::query_as::<_, Quotas>(sql::SET_QUOTAS)
                    .bind(q.max_reservations)
                    .bind(q.max_tunnels)
                    .bind(q.max_visitor_connections)
                    .bind(q.max_tunnel_bytes_per_sec)
                    .bind(user)
                    .fetch_one(&mut *tx)
                    .await?;
                let detail = format!(
                    "reservations={:?} tunnels={:?} visitor_connections={:?} bytes_per_sec={:?}",
                    q.max_reservations,
                    q.max_tunnels,
                    q.max_visitor_connections,
                    q.max_tunnel_bytes_per_sec
                );
                audit!(
                    tx,
                    actor,
                    crate::AuditAction::UserQuota,
                    user,
                    Some(id),
                    &detail
                );
                tx.commit().await?;
                Ok(row)
            }

            async fn create_token(&self, actor: &str, t: &NewToken) -> Result<ApiToken> {
                let mut tx = self.writer.begin_with($begin).await?;
                let row = sqlx::query_as::<_, ApiToken>(sql::CREATE_TOKEN)
                    .bind(t.user_id)
                    .bind(&t.name)
                    .bind(&t.hash)
                    .bind(&t.hint)
                    .bind(&t.scope)
                    .bind(t.expires_at)
                    .bind(crate::now())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| {
                        crate::backend::or_taken(e, || StoreError::TokenExists(t.name.clone()))
                    })?;
                audit!(
                    tx,
                    actor,
                    crate::AuditAction::TokenCreate,
                    &t.name,
                    Some(t.user_id),
                    &t.scope
                );
                tx.commit().await?;
                Ok(row)
            }

            async fn list_tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiToken>> {
                let q = token_select("WHERE ($1 IS NULL OR user_id = $1) ORDER BY id");
                Ok(sqlx::query_as::<_, ApiToken>(sqlx::AssertSqlSafe(q))
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn token_by_hash(&self, hash: &str) -> Result<Option<(ApiToken, User)>> {
                let q = token_select("WHERE hash = $1");
                let Some(t) = sqlx::query_as::<_, ApiToken>(sqlx::AssertSqlSafe(q))
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                Ok(self.user_by_id(t.user_id).await?.map(|u| (t, u)))
            }

            async fn touch_token(&self, id: i64, at: i64) -> Result<()> {
                sqlx::query(sql::TOUCH_TOKEN)
                    .bind(at)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn revoke_token(&self, actor: &str, id: i64) -> Result<ApiToken> {
                let mut tx = self.writer.begin_with($begin).await?;
                let t = sqlx::query_as::<_, ApiToken>(sql::REVOKE_TOKEN)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(StoreError::NoSuchToken(id))?;
                audit!(
                    tx,
                    actor,
                    crate::AuditAction::TokenRevoke,
                    &t.name,
                    Some(t.user_id),
                    ""
                );
                tx.commit().await?;
                Ok(t)
            }

            async fn create_login_session(&self, actor: &str, s: &LoginSession) -> Result<()> {
                let mut tx = self.writer.begin_with($begin).await?;
                sqlx::query(sql::CREATE_SESSION)
                    .bind(&s.id)
                    .bind(s.user_id)
                    .bind(s.created_at)
                    .bind(s.expires_at)
                    .execute(&mut *tx)
                    .await?;
                audit!(
                    tx,
                    actor,
                    crate::AuditAction::SessionLogin,
                    "",
                    Some(s.user_id),
                    ""
                );
                tx.commit().await?;
                Ok(())
            }

            async fn login_session(&self, id: &str) -> Result<Option<LoginSession>> {
                Ok(sqlx::query_as::<_, LoginSession>(sql::SESSION)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn end_login_session(&self, actor: &str, id: &str) -> Result<()> {
                let mut tx = self.writer.begin_with($begin).await?;
                let user: Option<(i64,)> = sqlx::query_as(sql::END_SESSION)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some((user,)) = user {
                    audit!(
                        tx,
                        actor,
                        crate::AuditAction::SessionLogout,
                        "",
                        Some(user),
                        ""
                    );
                }
                tx.commit().await?;
                Ok(())
            }

            async fn end_login_sessions_of(&self, actor: &str, user_id: i64) -> Result<u64> {
                let mut tx = self.writer.begin_with($begin).await?;
                let n = sqlx::query(sql::END_SESSIONS_OF)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                audit!(
                    tx,
                    actor,
                    crate::AuditAction::SessionLogoutAll,
                    "",
                    Some(user_id),
                    &n.to_string()
                );
                tx.commit().await?;
                Ok(n)
            }

            async fn signing_keys(&self, since: i64) -> Result<Vec<SigningKey>> {
                Ok(sqlx::query_as::<_, SigningKey>(sql::SIGNING_KEYS)
                    .bind(since)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn rotate_signing_key(&self, actor: &str, secret: &str) -> Result<SigningKey> {
                let mut tx = self.writer.begin_with($begin).await?;
                let now = crate::now();
                sqlx::query(sql::RETIRE_KEYS)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let key = sqlx::query_as::<_, SigningKey>(sql::ADD_KEY)
                    .bind(secret)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                audit!(
                    tx,
                    actor,
                    crate::AuditAction::SigningKeyRotate,
                    &key.id.to_string(),
                    None::<i64>,
                    ""
                );
                tx.commit().await?;
                Ok(key)
            }

            async fn ensure_signing_key(&self, secret: &str) -> Result<SigningKey> {
                let mut tx = self.writer.begin_with($begin).await?;
                let key = match sqlx::query_as::<_, SigningKey>(sql::NEWEST_KEY)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(k) => k,
                    None => {
                        sqlx::query_as::<_, SigningKey>(sql::ADD_KEY)
                            .bind(secret)
                            .bind(crate::now())
                            .fetch_one(&mut *tx)
                            .await?
                    }
                };
                tx.commit().await?;
                Ok(key)
            }

            async fn create_setup_token(&self, hash: &str, expires_at: i64) -> Result<()> {
                sqlx::query(sql::CREATE_SETUP)
                    .bind(hash)
                    .bind(expires_at)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn use_setup_token(&self, hash: &str, now: i64) -> Result<bool> {
                let n = sqlx::query(sql::USE_SETUP)
                    .bind(now)
                    .bind(hash)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn events_page(
                &self,
                user_id: Option<i64>,
                before: Option<i64>,
                limit: i64,
            ) -> Result<Vec<AuditEvent>> {
                Ok(sqlx::query_as::<_, AuditEvent>(sql::EVENTS_PAGE)
                    .bind(user_id)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn last_events_by_subject(
                &self,
                actions: &[AuditAction],
            ) -> Result<Vec<AuditEvent>> {
                if actions.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = sql::last_events_by_subject(actions.len());
                // Only numbered placeholders are formatted in; the values are bound.
                let mut q = sqlx::query_as::<_, AuditEvent>(sqlx::AssertSqlSafe(sql));
                for a in actions {
                    q = q.bind(a.as_str());
                }
                Ok(q.fetch_all(&self.pool).await?)
            }

            async fn last_event_about(
                &self,
                subject: &str,
                actions: &[AuditAction],
            ) -> Result<Option<AuditEvent>> {
                if actions.is_empty() {
                    return Ok(None);
                }
                let sql = sql::last_event_about(actions.len());
                // Only numbered placeholders are formatted in; the values are bound.
                let mut q = sqlx::query_as::<_, AuditEvent>(sqlx::AssertSqlSafe(sql)).bind(subject);
                for a in actions {
                    q = q.bind(a.as_str());
                }
                Ok(q.fetch_optional(&self.pool).await?)
            }
        }
    };
}

use crate::Store as _;
use crate::backend::{PostgresStore, SqliteStore};

impl_accounts!(SqliteStore, "BEGIN IMMEDIATE");
impl_accounts!(PostgresStore, "BEGIN");

//! The two backends. Their SQL is identical (positional `$N` parameters, `RETURNING`, integer
//! timestamps work on both), so it is written once, as the `const`s of [`sql`], and one macro
//! writes the two identical `impl`s of short methods over it; what differs (connection setup,
//! migrations, how a write transaction starts) is spelled out per backend below. The store
//! suite (store/tests/suite.rs) runs every test on both backends, so they cannot drift apart.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{
    AcmeAccount, AuditAction, AuditEvent, Certificate, NewCertificate, NewKey, Reservation, Result,
    SshKey, Store, StoreError, User,
};

/// SQLite backend: one file, WAL mode so the admin CLI and the server can use it at once.
///
/// Writes go through their own one-connection pool: SQLite has one writer at a time, and
/// writers that race for its lock wait in SQLite's busy handler, which sleeps in growing steps.
/// Under a reconnect storm (10,000 sessions, two writes each) that convoy made single INSERTs
/// take over a second and pool waits pass 15 s; queueing in the pool instead is first come,
/// first served, with no sleeping. Reads use the other pool and never wait for the writer (WAL).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    pub(crate) writer: SqlitePool,
}

/// Postgres backend.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    /// The same pool: Postgres has row locks, not one writer per database.
    pub(crate) writer: PgPool,
    /// The one connection listening for notifications, shared by every reader.
    pub(crate) notices: std::sync::Arc<crate::notices::Notices>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and migrates it.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL is still safe from corruption and from a crash of the broker;
            // only a power loss can roll back the last commits. FULL fsyncs every commit, which
            // capped a reconnect storm (10,000 clients at once, two writes each) at ~80 sessions/s.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../../migrations/sqlite")
            .run(&writer)
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(Self { pool, writer })
    }
}

impl PostgresStore {
    /// Connects to `url` with at most `pool` connections and migrates the database
    /// (migrations take an advisory lock, so several nodes starting at once are safe).
    pub async fn open(url: &str, pool: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await?;
        Ok(Self {
            writer: pool.clone(),
            pool,
            notices: Default::default(),
        })
    }
}

/// `SELECT` of keys joined with their owner's name, followed by `$tail`.
macro_rules! key_select {
    ($tail:literal) => {
        concat!(
            "SELECT k.id, k.user_id, u.name AS user_name, k.fingerprint, k.algorithm, ",
            "k.public_key, k.comment, k.created_at FROM ssh_keys k JOIN users u ON u.id = k.user_id",
            $tail
        )
    };
}

/// `SELECT` of reservations joined with their holder's name, followed by `$tail`.
macro_rules! res_select {
    ($tail:literal) => {
        concat!(
            "SELECT r.id, r.name, r.user_id, u.name AS user_name, r.created_at, r.kind ",
            "FROM reservations r JOIN users u ON u.id = r.user_id",
            $tail
        )
    };
}

/// The columns of [`Certificate`], in its field order, for `SELECT` and `RETURNING`.
macro_rules! cert_columns {
    () => {
        "id, name, chain_pem, private_key, not_before, not_after, issuer, challenge, last_error, \
         last_attempt, next_attempt, updated_at, owner_id"
    };
}

/// The SQL of [`Store`], the same on both backends.
mod sql {
    pub const CREATE_USER: &str = "INSERT INTO users (name, is_admin, disabled, created_at) \
         VALUES ($1, $2, FALSE, $3) RETURNING id, name, is_admin, disabled, created_at";
    pub const LIST_USERS: &str =
        "SELECT id, name, is_admin, disabled, created_at FROM users ORDER BY id";
    pub const USER_BY_NAME: &str =
        "SELECT id, name, is_admin, disabled, created_at FROM users WHERE name = $1";
    pub const USER_BY_ID: &str =
        "SELECT id, name, is_admin, disabled, created_at FROM users WHERE id = $1";
    pub const SET_USER_DISABLED: &str = "UPDATE users SET disabled = $1 WHERE name = $2 \
         RETURNING id, name, is_admin, disabled, created_at";

    pub const KEY_OWNER: &str = "SELECT u.name FROM ssh_keys k JOIN users u ON u.id = k.user_id \
         WHERE k.fingerprint = $1";
    pub const ADD_KEY: &str = "INSERT INTO ssh_keys \
         (user_id, fingerprint, algorithm, public_key, comment, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
    pub const KEY_BY_ID: &str = key_select!(" WHERE k.id = $1");
    pub const KEY_BY_FINGERPRINT: &str = key_select!(" WHERE k.fingerprint = $1");
    pub const LIST_KEYS: &str = key_select!(" WHERE ($1 IS NULL OR u.name = $1) ORDER BY k.id");
    pub const REMOVE_KEY: &str = "DELETE FROM ssh_keys WHERE id = $1";

    pub const RESERVATION: &str = res_select!(" WHERE r.name = $1");
    pub const LIST_RESERVATIONS: &str =
        res_select!(" WHERE ($1 IS NULL OR u.name = $1) ORDER BY r.name");
    pub const RESERVE: &str =
        "INSERT INTO reservations (name, user_id, created_at, kind) VALUES ($1, $2, $3, $4)";
    pub const RELEASE: &str = "DELETE FROM reservations WHERE id = $1";

    pub const RECORD: &str = "INSERT INTO audit_events \
         (at, actor, action, subject, user_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
    pub const EVENTS_SINCE: &str = "SELECT id, at, actor, action, subject, user_id, detail \
         FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2";
    pub const LAST_EVENT_ID: &str = "SELECT MAX(id) FROM audit_events";
    pub const CERTIFICATE_ISSUES_SINCE: &str = "SELECT id, at, actor, action, subject, user_id, \
         detail FROM audit_events WHERE action = 'cert.issue' AND at >= $1 ORDER BY id";

    pub const ACME_ACCOUNT: &str = "SELECT id, directory_url, credentials, created_at, \
         updated_at FROM acme_accounts WHERE directory_url = $1";
    pub const PUT_ACME_ACCOUNT: &str = "INSERT INTO acme_accounts \
         (directory_url, credentials, created_at, updated_at) VALUES ($1, $2, $3, $3) \
         ON CONFLICT (directory_url) DO UPDATE \
         SET credentials = excluded.credentials, updated_at = excluded.updated_at \
         RETURNING id, directory_url, credentials, created_at, updated_at";

    pub const PUT_CERTIFICATE: &str = concat!(
        "INSERT INTO certificates (name, chain_pem, private_key, not_before, not_after, \
         issuer, challenge, last_error, last_attempt, next_attempt, updated_at, owner_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $8, $10) \
         ON CONFLICT (name) DO UPDATE SET chain_pem = excluded.chain_pem, \
         private_key = excluded.private_key, not_before = excluded.not_before, \
         not_after = excluded.not_after, issuer = excluded.issuer, \
         challenge = excluded.challenge, last_error = NULL, \
         last_attempt = excluded.last_attempt, next_attempt = excluded.next_attempt, \
         updated_at = excluded.updated_at, owner_id = excluded.owner_id RETURNING ",
        cert_columns!()
    );
    pub const CERTIFICATE: &str = concat!(
        "SELECT ",
        cert_columns!(),
        " FROM certificates WHERE name = $1"
    );
    pub const LIST_CERTIFICATES: &str = concat!(
        "SELECT ",
        cert_columns!(),
        " FROM certificates ORDER BY name"
    );
    pub const DELETE_CERTIFICATE: &str = concat!(
        "DELETE FROM certificates WHERE name = $1 RETURNING ",
        cert_columns!()
    );
    pub const CERTIFICATE_FAILURE: &str = concat!(
        "INSERT INTO certificates \
         (name, last_error, last_attempt, next_attempt, updated_at, owner_id) \
         VALUES ($1, $2, $3, $4, $3, $5) ON CONFLICT (name) DO UPDATE \
         SET last_error = excluded.last_error, last_attempt = excluded.last_attempt, \
         next_attempt = excluded.next_attempt, updated_at = excluded.updated_at, \
         owner_id = excluded.owner_id RETURNING ",
        cert_columns!()
    );
    pub const CERTIFICATE_WAIT: &str = concat!(
        "INSERT INTO certificates (name, last_error, next_attempt, updated_at, owner_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE \
         SET last_error = excluded.last_error, next_attempt = excluded.next_attempt, \
         updated_at = excluded.updated_at, owner_id = excluded.owner_id RETURNING ",
        cert_columns!()
    );
    pub const RESCHEDULE_CERTIFICATE: &str = concat!(
        "UPDATE certificates SET next_attempt = $2 WHERE name = $1 RETURNING ",
        cert_columns!()
    );
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// `e` as `taken()` when it is a unique violation (another row holds the name), else as is.
pub(crate) fn or_taken(e: sqlx::Error, taken: impl FnOnce() -> StoreError) -> StoreError {
    if unique_violation(&e) {
        taken()
    } else {
        e.into()
    }
}

/// Writes the audit row for a mutation inside the mutation's transaction.
macro_rules! audit {
    ($tx:expr, $actor:expr, $action:expr, $subject:expr, $user:expr, $detail:expr) => {
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, subject, user_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(crate::now())
        .bind($actor)
        .bind($crate::AuditAction::as_str($action))
        .bind($subject)
        .bind($user)
        .bind($detail)
        .execute(&mut *$tx)
        .await?
    };
}

macro_rules! impl_store {
    ($ty:ty, $begin:literal) => {
        impl $ty {
            async fn require_user(
                tx: &mut sqlx::Transaction<'static, <$ty as Backend>::Db>,
                name: &str,
            ) -> Result<User> {
                sqlx::query_as::<_, User>(sql::USER_BY_NAME)
                    .bind(name)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))
            }
        }

        #[async_trait::async_trait]
        impl Store for $ty {
            async fn create_user(&self, actor: &str, name: &str, is_admin: bool) -> Result<User> {
                let mut tx = self.writer.begin_with($begin).await?;
                let user = sqlx::query_as::<_, User>(sql::CREATE_USER)
                    .bind(name)
                    .bind(is_admin)
                    .bind(crate::now())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| or_taken(e, || StoreError::UserExists(name.to_owned())))?;
                let detail = if is_admin { "admin" } else { "" };
                audit!(tx, actor, AuditAction::UserAdd, name, Some(user.id), detail);
                tx.commit().await?;
                Ok(user)
            }

            async fn list_users(&self) -> Result<Vec<User>> {
                Ok(sqlx::query_as::<_, User>(sql::LIST_USERS)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
                Ok(sqlx::query_as::<_, User>(sql::USER_BY_NAME)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn user_by_id(&self, id: i64) -> Result<Option<User>> {
                Ok(sqlx::query_as::<_, User>(sql::USER_BY_ID)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn set_user_disabled(
                &self,
                actor: &str,
                name: &str,
                disabled: bool,
            ) -> Result<User> {
                let mut tx = self.writer.begin_with($begin).await?;
                let user = sqlx::query_as::<_, User>(sql::SET_USER_DISABLED)
                    .bind(disabled)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?;
                let action = if disabled {
                    AuditAction::UserDisable
                } else {
                    AuditAction::UserEnable
                };
                audit!(tx, actor, action, name, Some(user.id), "");
                tx.commit().await?;
                Ok(user)
            }

            async fn add_key(&self, actor: &str, user: &str, key: &NewKey) -> Result<SshKey> {
                let mut tx = self.writer.begin_with($begin).await?;
                let owner = Self::require_user(&mut tx, user).await?;
                let existing: Option<(String,)> = sqlx::query_as(sql::KEY_OWNER)
                    .bind(&key.fingerprint)
                    .fetch_optional(&mut *tx)
                    .await?;
                let taken = |owner: &str| StoreError::KeyExists {
                    fingerprint: key.fingerprint.clone(),
                    owner: owner.to_owned(),
                };
                if let Some((holder,)) = existing {
                    return Err(taken(&holder));
                }
                let (id,): (i64,) = sqlx::query_as(sql::ADD_KEY)
                    .bind(owner.id)
                    .bind(&key.fingerprint)
                    .bind(&key.algorithm)
                    .bind(&key.public_key)
                    .bind(&key.comment)
                    .bind(crate::now())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| or_taken(e, || taken(&owner.name)))?;
                let (fingerprint, algorithm) = (&key.fingerprint, &key.algorithm);
                audit!(
                    tx,
                    actor,
                    AuditAction::KeyAdd,
                    fingerprint,
                    Some(owner.id),
                    algorithm
                );
                let row = sqlx::query_as::<_, SshKey>(sql::KEY_BY_ID)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn list_keys(&self, user: Option<&str>) -> Result<Vec<SshKey>> {
                Ok(sqlx::query_as::<_, SshKey>(sql::LIST_KEYS)
                    .bind(user)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn remove_key(&self, actor: &str, fingerprint: &str) -> Result<SshKey> {
                let mut tx = self.writer.begin_with($begin).await?;
                let key = sqlx::query_as::<_, SshKey>(sql::KEY_BY_FINGERPRINT)
                    .bind(fingerprint)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchKey(fingerprint.to_owned()))?;
                sqlx::query(sql::REMOVE_KEY)
                    .bind(key.id)
                    .execute(&mut *tx)
                    .await?;
                audit!(
                    tx,
                    actor,
                    AuditAction::KeyRemove,
                    fingerprint,
                    Some(key.user_id),
                    ""
                );
                tx.commit().await?;
                Ok(key)
            }

            async fn key_by_fingerprint(
                &self,
                fingerprint: &str,
            ) -> Result<Option<(SshKey, User)>> {
                let Some(key) = sqlx::query_as::<_, SshKey>(sql::KEY_BY_FINGERPRINT)
                    .bind(fingerprint)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                let user = self.user_by_id(key.user_id).await?;
                Ok(user.map(|u| (key, u)))
            }

            async fn reserve(
                &self,
                actor: &str,
                user: &str,
                name: &str,
                kind: &str,
            ) -> Result<Reservation> {
                let mut tx = self.writer.begin_with($begin).await?;
                let owner = Self::require_user(&mut tx, user).await?;
                let held = sqlx::query_as::<_, Reservation>(sql::RESERVATION)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(held) = held {
                    return if held.user_id == owner.id {
                        Ok(held)
                    } else {
                        Err(StoreError::NameTaken {
                            name: name.to_owned(),
                            owner_id: held.user_id,
                        })
                    };
                }
                sqlx::query(sql::RESERVE)
                    .bind(name)
                    .bind(owner.id)
                    .bind(crate::now())
                    .bind(kind)
                    .execute(&mut *tx)
                    .await
                    // Lost a race with another writer between our check and insert.
                    .map_err(|e| {
                        or_taken(e, || StoreError::NameTaken {
                            name: name.to_owned(),
                            owner_id: -1,
                        })
                    })?;
                audit!(
                    tx,
                    actor,
                    AuditAction::NameReserve,
                    name,
                    Some(owner.id),
                    kind
                );
                let row = sqlx::query_as::<_, Reservation>(sql::RESERVATION)
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn release(&self, actor: &str, name: &str) -> Result<Reservation> {
                let mut tx = self.writer.begin_with($begin).await?;
                let held = sqlx::query_as::<_, Reservation>(sql::RESERVATION)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchReservation(name.to_owned()))?;
                sqlx::query(sql::RELEASE)
                    .bind(held.id)
                    .execute(&mut *tx)
                    .await?;
                audit!(
                    tx,
                    actor,
                    AuditAction::NameRelease,
                    name,
                    Some(held.user_id),
                    ""
                );
                tx.commit().await?;
                Ok(held)
            }

            async fn reservation(&self, name: &str) -> Result<Option<Reservation>> {
                Ok(sqlx::query_as::<_, Reservation>(sql::RESERVATION)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn list_reservations(&self, user: Option<&str>) -> Result<Vec<Reservation>> {
                Ok(sqlx::query_as::<_, Reservation>(sql::LIST_RESERVATIONS)
                    .bind(user)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn record(&self, e: &AuditEvent) -> Result<i64> {
                let (id,): (i64,) = sqlx::query_as(sql::RECORD)
                    .bind(e.at)
                    .bind(&e.actor)
                    .bind(&e.action)
                    .bind(&e.subject)
                    .bind(e.user_id)
                    .bind(&e.detail)
                    .fetch_one(&self.writer)
                    .await?;
                Ok(id)
            }

            async fn events_since(&self, after: i64, limit: i64) -> Result<Vec<AuditEvent>> {
                Ok(sqlx::query_as::<_, AuditEvent>(sql::EVENTS_SINCE)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn last_event_id(&self) -> Result<i64> {
                let (id,): (Option<i64>,) = sqlx::query_as(sql::LAST_EVENT_ID)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(id.unwrap_or(0))
            }

            async fn acme_account(&self, directory_url: &str) -> Result<Option<AcmeAccount>> {
                Ok(sqlx::query_as::<_, AcmeAccount>(sql::ACME_ACCOUNT)
                    .bind(directory_url)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn put_acme_account(
                &self,
                actor: &str,
                directory_url: &str,
                credentials: &str,
            ) -> Result<AcmeAccount> {
                let mut tx = self.writer.begin_with($begin).await?;
                let account = sqlx::query_as::<_, AcmeAccount>(sql::PUT_ACME_ACCOUNT)
                    .bind(directory_url)
                    .bind(credentials)
                    .bind(crate::now())
                    .fetch_one(&mut *tx)
                    .await?;
                audit!(
                    tx,
                    actor,
                    AuditAction::AcmeAccount,
                    directory_url,
                    None::<i64>,
                    ""
                );
                tx.commit().await?;
                Ok(account)
            }

            async fn put_certificate(
                &self,
                actor: &str,
                c: &NewCertificate,
            ) -> Result<Certificate> {
                let mut tx = self.writer.begin_with($begin).await?;
                let row = sqlx::query_as::<_, Certificate>(sql::PUT_CERTIFICATE)
                    .bind(&c.name)
                    .bind(&c.chain_pem)
                    .bind(&c.private_key)
                    .bind(c.not_before)
                    .bind(c.not_after)
                    .bind(&c.issuer)
                    .bind(&c.challenge)
                    .bind(crate::now())
                    .bind(c.next_attempt)
                    .bind(c.owner)
                    .fetch_one(&mut *tx)
                    .await?;
                audit!(
                    tx,
                    actor,
                    AuditAction::CertIssue,
                    &c.name,
                    c.owner,
                    &c.issuer
                );
                tx.commit().await?;
                Ok(row)
            }

            async fn certificate(&self, name: &str) -> Result<Option<Certificate>> {
                Ok(sqlx::query_as::<_, Certificate>(sql::CERTIFICATE)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn list_certificates(&self) -> Result<Vec<Certificate>> {
                Ok(sqlx::query_as::<_, Certificate>(sql::LIST_CERTIFICATES)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn delete_certificate(&self, actor: &str, name: &str) -> Result<Certificate> {
                let mut tx = self.writer.begin_with($begin).await?;
                let row = sqlx::query_as::<_, Certificate>(sql::DELETE_CERTIFICATE)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchCertificate(name.to_owned()))?;
                audit!(tx, actor, AuditAction::CertDelete, name, None::<i64>, "");
                tx.commit().await?;
                Ok(row)
            }

            async fn record_certificate_failure(
                &self,
                name: &str,
                owner: Option<i64>,
                error: &str,
                next_attempt: i64,
            ) -> Result<Certificate> {
                Ok(sqlx::query_as::<_, Certificate>(sql::CERTIFICATE_FAILURE)
                    .bind(name)
                    .bind(error)
                    .bind(crate::now())
                    .bind(next_attempt)
                    .bind(owner)
                    .fetch_one(&self.writer)
                    .await?)
            }

            async fn record_certificate_wait(
                &self,
                name: &str,
                owner: Option<i64>,
                reason: &str,
                next_attempt: i64,
            ) -> Result<Certificate> {
                Ok(sqlx::query_as::<_, Certificate>(sql::CERTIFICATE_WAIT)
                    .bind(name)
                    .bind(reason)
                    .bind(next_attempt)
                    .bind(crate::now())
                    .bind(owner)
                    .fetch_one(&self.writer)
                    .await?)
            }

            async fn reschedule_certificate(
                &self,
                name: &str,
                next_attempt: i64,
            ) -> Result<Option<Certificate>> {
                Ok(
                    sqlx::query_as::<_, Certificate>(sql::RESCHEDULE_CERTIFICATE)
                        .bind(name)
                        .bind(next_attempt)
                        .fetch_optional(&self.writer)
                        .await?,
                )
            }

            async fn certificate_issues_since(&self, since: i64) -> Result<Vec<AuditEvent>> {
                Ok(
                    sqlx::query_as::<_, AuditEvent>(sql::CERTIFICATE_ISSUES_SINCE)
                        .bind(since)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }
        }
    };
}

/// Names each backend's database type for the shared macro.
trait Backend {
    type Db: sqlx::Database;
}
impl Backend for SqliteStore {
    type Db = sqlx::Sqlite;
}
impl Backend for PostgresStore {
    type Db = sqlx::Postgres;
}

// SQLite takes the write lock up front so two writers (server and CLI) never deadlock upgrading
// a read transaction; Postgres row locks need no such care.
impl_store!(SqliteStore, "BEGIN IMMEDIATE");
impl_store!(PostgresStore, "BEGIN");

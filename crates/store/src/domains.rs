//! Custom domains attached to reservations (see `warren-domains` for what proves one).
//!
//! A row hangs off a reservation (`ON DELETE CASCADE`: a released name's domains go with it).
//! Attaching, removing, and each change of state a check brings write an audit row whose
//! subject is the host name (`domain.add`, `domain.remove`, `domain.verify`, `domain.fail`);
//! checks that change nothing only update the row, or a pending domain polled every 30 s
//! would flood the log.
//!
//! As in `rules.rs`, the SQL is kept in `const`s and the macro at the bottom only writes the
//! two identical `impl`s.

use crate::{Result, StoreError};

/// A custom domain as stored, with its reservation's name and holder.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CustomDomain {
    /// Stable id.
    pub id: i64,
    /// The host name, lowercase, no trailing dot.
    pub hostname: String,
    /// The reservation that serves it.
    pub reservation_id: i64,
    /// That reservation's name.
    pub reservation: String,
    /// That reservation's kind (`http`, `tls`, `tcp`).
    pub kind: String,
    /// The reservation's holder.
    pub user_id: i64,
    /// The holder's name.
    pub user_name: String,
    /// What the TXT record must hold.
    pub token: String,
    /// `pending`, `verified` or `failing`.
    pub state: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When DNS last proved it.
    pub verified_at: Option<i64>,
    /// When it was last looked up.
    pub last_checked: Option<i64>,
    /// What the last check found wrong, if anything.
    pub last_error: Option<String>,
    /// Since when its proof has been missing (failing domains).
    pub failing_since: Option<i64>,
}

/// The outcome of one check, to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainCheck {
    /// The new state.
    pub state: String,
    /// When it was last proven.
    pub verified_at: Option<i64>,
    /// Since when its proof has been missing.
    pub failing_since: Option<i64>,
    /// When this check ran.
    pub checked_at: i64,
    /// What was wrong, if anything.
    pub error: Option<String>,
}

/// Which domains to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainFilter<'a> {
    /// Every domain (the broker's background task; admins).
    All,
    /// Those on reservations of one user.
    User(i64),
    /// Those on one reservation.
    Reservation(&'a str),
    /// Every row for one host name (several tenants may have it pending).
    Hostname(&'a str),
}

/// Custom domains: what the edge's aliases are built from.
#[async_trait::async_trait]
pub trait DomainStore: Send + Sync + 'static {
    /// Attaches `hostname` (already validated) to the reservation `name`, pending, with
    /// `token`. [`StoreError::NoSuchReservation`] without the reservation;
    /// [`StoreError::DomainTaken`] when the reservation has it already.
    async fn add_domain(
        &self,
        actor: &str,
        name: &str,
        hostname: &str,
        token: &str,
    ) -> Result<CustomDomain>;
    /// Domains per `filter`, by host name.
    async fn list_domains(&self, filter: DomainFilter<'_>) -> Result<Vec<CustomDomain>>;
    /// Detaches the domain with this id; [`StoreError::NoSuchDomain`] if there is none.
    async fn remove_domain(&self, actor: &str, id: i64) -> Result<CustomDomain>;
    /// Stores a check's outcome. A change of state is audited (`domain.verify` on becoming
    /// verified, `domain.fail` on starting to fail); [`StoreError::DomainTaken`] when it would
    /// become verified while another reservation holds the host name.
    async fn record_domain_check(
        &self,
        actor: &str,
        id: i64,
        check: &DomainCheck,
    ) -> Result<CustomDomain>;
}

mod sql {
    /// `SELECT` of domains with their reservation and holder; a `WHERE` follows.
    macro_rules! select {
        ($tail:literal) => {
            concat!(
                "SELECT d.id, d.hostname, d.reservation_id, r.name AS reservation, r.kind, ",
                "r.user_id, u.name AS user_name, d.token, d.state, d.created_at, d.verified_at, ",
                "d.last_checked, d.last_error, d.failing_since FROM custom_domains d ",
                "JOIN reservations r ON r.id = d.reservation_id JOIN users u ON u.id = r.user_id ",
                $tail
            )
        };
    }
    pub const ALL: &str = select!("ORDER BY d.hostname, d.id");
    pub const BY_USER: &str = select!("WHERE r.user_id = $1 ORDER BY d.hostname, d.id");
    pub const BY_RESERVATION: &str = select!("WHERE r.name = $1 ORDER BY d.hostname, d.id");
    pub const BY_HOSTNAME: &str = select!("WHERE d.hostname = $1 ORDER BY d.id");
    pub const BY_ID: &str = select!("WHERE d.id = $1");
    pub const RESERVATION: &str = "SELECT id, user_id FROM reservations WHERE name = $1";
    pub const INSERT: &str = "INSERT INTO custom_domains \
         (hostname, reservation_id, token, state, created_at) VALUES ($1, $2, $3, 'pending', $4) \
         RETURNING id";
    pub const DELETE: &str = "DELETE FROM custom_domains WHERE id = $1";
    pub const UPDATE: &str = "UPDATE custom_domains SET state = $2, verified_at = $3, \
         failing_since = $4, last_checked = $5, last_error = $6 WHERE id = $1";
}

macro_rules! impl_domains {
    ($ty:ty, $begin:literal) => {
        #[async_trait::async_trait]
        impl DomainStore for $ty {
            async fn add_domain(
                &self,
                actor: &str,
                name: &str,
                hostname: &str,
                token: &str,
            ) -> Result<CustomDomain> {
                let mut tx = self.writer.begin_with($begin).await?;
                let (rid, owner): (i64, i64) = sqlx::query_as(sql::RESERVATION)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchReservation(name.to_owned()))?;
                let inserted = sqlx::query_as::<_, (i64,)>(sql::INSERT)
                    .bind(hostname)
                    .bind(rid)
                    .bind(token)
                    .bind(crate::now())
                    .fetch_one(&mut *tx)
                    .await;
                let (id,) = inserted.map_err(|e| {
                    crate::backend::or_taken(e, || StoreError::DomainTaken(hostname.to_owned()))
                })?;
                let row = sqlx::query_as::<_, CustomDomain>(sql::BY_ID)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                audit!(
                    tx,
                    actor,
                    crate::AuditAction::DomainAdd,
                    hostname,
                    Some(owner),
                    &format!("on {name}")
                );
                tx.commit().await?;
                Ok(row)
            }

            async fn list_domains(&self, filter: DomainFilter<'_>) -> Result<Vec<CustomDomain>> {
                let q = match filter {
                    DomainFilter::All => sqlx::query_as::<_, CustomDomain>(sql::ALL),
                    DomainFilter::User(id) => {
                        sqlx::query_as::<_, CustomDomain>(sql::BY_USER).bind(id)
                    }
                    DomainFilter::Reservation(name) => {
                        sqlx::query_as::<_, CustomDomain>(sql::BY_RESERVATION).bind(name)
                    }
                    DomainFilter::Hostname(host) => {
                        sqlx::query_as::<_, CustomDomain>(sql::BY_HOSTNAME).bind(host)
                    }
                };
                Ok(q.fetch_all(&self.pool).await?)
            }

            async fn remove_domain(&self, actor: &str, id: i64) -> Result<CustomDomain> {
                let mut tx = self.writer.begin_with($begin).await?;
                let row = sqlx::query_as::<_, CustomDomain>(sql::BY_ID)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchDomain(format!("id {id}")))?;
                sqlx::query(sql::DELETE).bind(id).execute(&mut *tx).await?;
                let detail = format!("from {} ({})", row.reservation, row.state);
                audit!(
                    tx,
                    actor,
                    crate::AuditAction::DomainRemove,
                    &row.hostname,
                    Some(row.user_id),
                    &detail
                );
                tx.commit().await?;
                Ok(row)
            }

            async fn record_domain_check(
                &self,
                actor: &str,
                id: i64,
                check: &DomainCheck,
            ) -> Result<CustomDomain> {
                let mut tx = self.writer.begin_with($begin).await?;
                let before = sqlx::query_as::<_, CustomDomain>(sql::BY_ID)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchDomain(format!("id {id}")))?;
                let updated = sqlx::query(sql::UPDATE)
                    .bind(id)
                    .bind(&check.state)
                    .bind(check.verified_at)
                    .bind(check.failing_since)
                    .bind(check.checked_at)
                    .bind(&check.error)
                    .execute(&mut *tx)
                    .await;
                updated.map_err(|e| {
                    crate::backend::or_taken(e, || StoreError::DomainTaken(before.hostname.clone()))
                })?;
                if before.state != check.state {
                    let action = match check.state.as_str() {
                        "verified" => Some(crate::AuditAction::DomainVerify),
                        "failing" => Some(crate::AuditAction::DomainFail),
                        _ => None,
                    };
                    if let Some(action) = action {
                        let detail = check.error.clone().unwrap_or_default();
                        audit!(
                            tx,
                            actor,
                            action,
                            &before.hostname,
                            Some(before.user_id),
                            &detail
                        );
                    }
                }
                let row = sqlx::query_as::<_, CustomDomain>(sql::BY_ID)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row)
            }
        }
    };
}

use crate::backend::{PostgresStore, SqliteStore};

impl_domains!(SqliteStore, "BEGIN IMMEDIATE");
impl_domains!(PostgresStore, "BEGIN");

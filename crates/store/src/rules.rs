//! Access rules per reservation: basic-auth users, IP allow/deny entries and share links, and
//! the key that signs share cookies.
//!
//! Every row hangs off a reservation (by id, with `ON DELETE CASCADE`), so releasing a name
//! drops its rules. Mutations write a `rules.change`, `share.create`, `share.revoke` or
//! `share.redeem` audit row whose subject is the reservation's name: the running broker's
//! watcher refreshes that name's policy in the edge from it.
//!
//! As in `accounts.rs`, the SQL is kept in `const`s and the macro at the bottom only writes the
//! two identical `impl`s.

use crate::{Reservation, Result, StoreError};

/// A basic-auth user of one reservation.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BasicUser {
    /// Stable id.
    pub id: i64,
    /// The reservation it protects.
    pub reservation_id: i64,
    /// What the visitor types as the user name.
    pub username: String,
    /// An argon2id PHC string or a bcrypt (`$2y$`, `$2a$`, `$2b$`) hash.
    pub hash: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// One IP allow or deny entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IpRule {
    /// Stable id.
    pub id: i64,
    /// The reservation it applies to.
    pub reservation_id: i64,
    /// `allow` or `deny`.
    pub action: String,
    /// The network in canonical form (`10.0.0.0/8`, `2001:db8::/32`), checked by the caller.
    pub cidr: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A share link as stored: never its token, only the token's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ShareLink {
    /// Stable id, shown to the owner and carried in the visitor's cookie.
    pub id: i64,
    /// The reservation it opens.
    pub reservation_id: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; past it the link and every cookie it gave stop working.
    pub expires_at: i64,
    /// Redemptions left; `None` for unlimited.
    pub uses_left: Option<i64>,
    /// Revoked links and their cookies stop working at once.
    pub revoked: bool,
    /// The actor who made it (`cli`, `ssh:alice`, …).
    pub created_by: String,
}

impl ShareLink {
    /// Whether cookies given by this link are still honoured at `now`: not revoked, not
    /// expired. A used-up link still honours the cookies it gave.
    pub fn is_live(&self, now: i64) -> bool {
        !self.revoked && self.expires_at > now
    }
}

/// A share link to store, its token hashed by the caller.
#[derive(Debug, Clone)]
pub struct NewShare {
    /// Hex SHA-256 of the link's token.
    pub token_hash: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Redemptions allowed; `None` for unlimited.
    pub uses: Option<i64>,
}

/// Everything attached to one reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The reservation (name, holder, kind).
    pub reservation: Reservation,
    /// Basic-auth users, by user name.
    pub basic_users: Vec<BasicUser>,
    /// IP entries, oldest first.
    pub ip_rules: Vec<IpRule>,
    /// Share links, oldest first, revoked and expired ones included.
    pub shares: Vec<ShareLink>,
}

impl Rules {
    /// Whether nothing is attached: no users, no IP entries and no share link.
    pub fn is_empty(&self) -> bool {
        self.basic_users.is_empty() && self.ip_rules.is_empty() && self.shares.is_empty()
    }
}

/// Access rules: the part of the store the edge's policies are built from.
#[async_trait::async_trait]
pub trait RuleStore: Send + Sync + 'static {
    /// The rules of one reservation; [`StoreError::NoSuchReservation`] if the name is not
    /// reserved.
    async fn rules(&self, name: &str) -> Result<Rules>;
    /// The rules of every reservation that has any (what a broker loads at start).
    async fn all_rules(&self) -> Result<Vec<Rules>>;

    /// Adds a basic-auth user, or replaces the hash of one with the same user name.
    async fn put_basic_user(
        &self,
        actor: &str,
        name: &str,
        username: &str,
        hash: &str,
    ) -> Result<BasicUser>;
    /// Adds or replaces several basic-auth users at once (an htpasswd import): all or none,
    /// one audit row.
    async fn put_basic_users(
        &self,
        actor: &str,
        name: &str,
        users: &[(String, String)],
    ) -> Result<usize>;
    /// Removes a basic-auth user; [`StoreError::NoSuchRule`] if there is none by that name.
    async fn remove_basic_user(&self, actor: &str, name: &str, username: &str)
    -> Result<BasicUser>;
    /// Sets the action (`allow` or `deny`) of a CIDR, adding it if new.
    async fn put_ip_rule(
        &self,
        actor: &str,
        name: &str,
        action: &str,
        cidr: &str,
    ) -> Result<IpRule>;
    /// Removes the entry for a CIDR; [`StoreError::NoSuchRule`] if there is none.
    async fn remove_ip_rule(&self, actor: &str, name: &str, cidr: &str) -> Result<IpRule>;
    /// Removes every basic-auth user and IP entry of a reservation (share links stay: they
    /// are revoked one by one). Returns how many rows went.
    async fn clear_rules(&self, actor: &str, name: &str) -> Result<u64>;

    /// Stores a share link.
    async fn create_share(&self, actor: &str, name: &str, share: &NewShare) -> Result<ShareLink>;
    /// Revokes a share link of `name`; [`StoreError::NoSuchShare`] if `name` has no link
    /// with that id.
    async fn revoke_share(&self, actor: &str, name: &str, id: i64) -> Result<ShareLink>;
    /// Uses a share link of `name` once, in one statement (atomic on both backends, so two
    /// nodes cannot both take a link's last use): `None` when no link of `name` has this
    /// token hash, or it is revoked, expired at `now` or used up.
    async fn redeem_share(
        &self,
        name: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<ShareLink>>;

    /// The key that signs share cookies: the stored one, or `fresh` stored first if there is
    /// none (the first start of the first node).
    async fn share_cookie_key(&self, fresh: &str) -> Result<String>;
}

mod sql {
    pub const RESERVATION: &str = "SELECT r.id, r.name, r.user_id, u.name AS user_name, \
         r.created_at, r.kind FROM reservations r JOIN users u ON u.id = r.user_id \
         WHERE r.name = $1";
    pub const WITH_RULES: &str = "SELECT r.id, r.name, r.user_id, u.name AS user_name, \
         r.created_at, r.kind FROM reservations r JOIN users u ON u.id = r.user_id \
         WHERE EXISTS (SELECT 1 FROM basic_users b WHERE b.reservation_id = r.id) \
         OR EXISTS (SELECT 1 FROM ip_rules i WHERE i.reservation_id = r.id) \
         OR EXISTS (SELECT 1 FROM share_links s WHERE s.reservation_id = r.id) ORDER BY r.name";
    pub const USERS: &str = "SELECT id, reservation_id, username, hash, created_at \
         FROM basic_users WHERE reservation_id = $1 ORDER BY username";
    pub const IPS: &str = "SELECT id, reservation_id, action, cidr, created_at \
         FROM ip_rules WHERE reservation_id = $1 ORDER BY id";
    pub const SHARES: &str = "SELECT id, reservation_id, created_at, expires_at, uses_left, \
         revoked, created_by FROM share_links WHERE reservation_id = $1 ORDER BY id";
    pub const PUT_USER: &str = "INSERT INTO basic_users (reservation_id, username, hash, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (reservation_id, username) \
         DO UPDATE SET hash = excluded.hash \
         RETURNING id, reservation_id, username, hash, created_at";
    pub const REMOVE_USER: &str = "DELETE FROM basic_users WHERE reservation_id = $1 AND username = $2 \
         RETURNING id, reservation_id, username, hash, created_at";
    pub const PUT_IP: &str = "INSERT INTO ip_rules (reservation_id, action, cidr, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (reservation_id, cidr) \
         DO UPDATE SET action = excluded.action \
         RETURNING id, reservation_id, action, cidr, created_at";
    pub const REMOVE_IP: &str = "DELETE FROM ip_rules WHERE reservation_id = $1 AND cidr = $2 \
         RETURNING id, reservation_id, action, cidr, created_at";
    pub const CLEAR_USERS: &str = "DELETE FROM basic_users WHERE reservation_id = $1";
    pub const CLEAR_IPS: &str = "DELETE FROM ip_rules WHERE reservation_id = $1";
    pub const CREATE_SHARE: &str = "INSERT INTO share_links \
         (reservation_id, token_hash, created_at, expires_at, uses_left, revoked, created_by) \
         VALUES ($1, $2, $3, $4, $5, FALSE, $6) \
         RETURNING id, reservation_id, created_at, expires_at, uses_left, revoked, created_by";
    pub const REVOKE_SHARE: &str = "UPDATE share_links SET revoked = TRUE \
         WHERE id = $1 AND reservation_id = $2 \
         RETURNING id, reservation_id, created_at, expires_at, uses_left, revoked, created_by";
    /// One statement: Postgres re-checks the WHERE on the row it locked, so of two concurrent
    /// redemptions of a link's last use exactly one updates a row; SQLite has one writer.
    pub const REDEEM: &str = "UPDATE share_links SET uses_left = uses_left - 1 \
         WHERE token_hash = $1 AND NOT revoked AND expires_at > $2 \
         AND (uses_left IS NULL OR uses_left > 0) \
         AND reservation_id = (SELECT id FROM reservations WHERE name = $3) \
         RETURNING id, reservation_id, created_at, expires_at, uses_left, revoked, created_by";
    pub const SHARE_KEY: &str = "SELECT secret FROM share_keys WHERE id = 1";
    /// Row 1 or nothing: of two nodes starting at once, the second's insert does nothing and
    /// both read the first's key.
    pub const ADD_SHARE_KEY: &str = "INSERT INTO share_keys (id, secret, created_at) \
         VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING";
}

macro_rules! impl_rules {
    ($ty:ty, $db:ty, $begin:literal) => {
        impl $ty {
            /// Starts a change to `name`'s rules: a write transaction and the reservation (or
            /// `NoSuchReservation`).
            async fn begin_change(
                &self,
                name: &str,
            ) -> Result<(sqlx::Transaction<'static, $db>, Reservation)> {
                let mut tx = self.writer.begin_with($begin).await?;
                let r = sqlx::query_as::<_, Reservation>(sql::RESERVATION)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchReservation(name.to_owned()))?;
                Ok((tx, r))
            }

            /// Writes the change's audit row (subject: the name; user: its holder) and commits.
            async fn finish_change(
                mut tx: sqlx::Transaction<'static, $db>,
                actor: &str,
                action: crate::AuditAction,
                r: &Reservation,
                detail: &str,
            ) -> Result<()> {
                audit!(tx, actor, action, &r.name, Some(r.user_id), detail);
                tx.commit().await?;
                Ok(())
            }

            async fn rules_of(&self, reservation: Reservation) -> Result<Rules> {
                let basic_users = sqlx::query_as::<_, BasicUser>(sql::USERS)
                    .bind(reservation.id)
                    .fetch_all(&self.pool)
                    .await?;
                let ip_rules = sqlx::query_as::<_, IpRule>(sql::IPS)
                    .bind(reservation.id)
                    .fetch_all(&self.pool)
                    .await?;
                let shares = sqlx::query_as::<_, ShareLink>(sql::SHARES)
                    .bind(reservation.id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(Rules {
                    reservation,
                    basic_users,
                    ip_rules,
                    shares,
                })
            }
        }

        #[async_trait::async_trait]
        impl RuleStore for $ty {
            async fn rules(&self, name: &str) -> Result<Rules> {
                let r = sqlx::query_as::<_, Reservation>(sql::RESERVATION)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchReservation(name.to_owned()))?;
                self.rules_of(r).await
            }

            async fn all_rules(&self) -> Result<Vec<Rules>> {
                let held = sqlx::query_as::<_, Reservation>(sql::WITH_RULES)
                    .fetch_all(&self.pool)
                    .await?;
                let mut out = Vec::with_capacity(held.len());
                for r in held {
                    out.push(self.rules_of(r).await?);
                }
                Ok(out)
            }

            async fn put_basic_user(
                &self,
                actor: &str,
                name: &str,
                username: &str,
                hash: &str,
            ) -> Result<BasicUser> {
                let (mut tx, r) = self.begin_change(name).await?;
                let row = sqlx::query_as::<_, BasicUser>(sql::PUT_USER)
                    .bind(r.id)
                    .bind(username)
                    .bind(hash)
                    .bind(crate::now())
                    .fetch_one(&mut *tx)
                    .await?;
                Self::finish_change(
                    tx,
                    actor,
                    crate::AuditAction::RulesChange,
                    &r,
                    &format!("auth add {username}"),
                )
                .await?;
                Ok(row)
            }

            async fn put_basic_users(
                &self,
                actor: &str,
                name: &str,
                users: &[(String, String)],
            ) -> Result<usize> {
                let (mut tx, r) = self.begin_change(name).await?;
                let now = crate::now();
                for (username, hash) in users {
                    sqlx::query(sql::PUT_USER)
                        .bind(r.id)
                        .bind(username)
                        .bind(hash)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                let detail = format!("auth import {} users", users.len());
                Self::finish_change(tx, actor, crate::AuditAction::RulesChange, &r, &detail)
                    .await?;
                Ok(users.len())
            }

            async fn remove_basic_user(
                &self,
                actor: &str,
                name: &str,
                username: &str,
            ) -> Result<BasicUser> {
                let (mut tx, r) = self.begin_change(name).await?;
                let row = sqlx::query_as::<_, BasicUser>(sql::REMOVE_USER)
                    .bind(r.id)
                    .bind(username)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| {
                        StoreError::NoSuchRule(format!(
                            "{name} has no basic-auth user {username:?}"
                        ))
                    })?;
                Self::finish_change(
                    tx,
                    actor,
                    crate::AuditAction::RulesChange,
                    &r,
                    &format!("auth rm {username}"),
                )
                .await?;
                Ok(row)
            }

            async fn put_ip_rule(
                &self,
                actor: &str,
                name: &str,
                action: &str,
                cidr: &str,
            ) -> Result<IpRule> {
                let (mut tx, r) = self.begin_change(name).await?;
                let row = sqlx::query_as::<_, IpRule>(sql::PUT_IP)
                    .bind(r.id)
                    .bind(action)
                    .bind(cidr)
                    .bind(crate::now())
                    .fetch_one(&mut *tx)
                    .await?;
                Self::finish_change(
                    tx,
                    actor,
                    crate::AuditAction::RulesChange,
                    &r,
                    &format!("{action} {cidr}"),
                )
                .await?;
                Ok(row)
            }

            async fn remove_ip_rule(&self, actor: &str, name: &str, cidr: &str) -> Result<IpRule> {
                let (mut tx, r) = self.begin_change(name).await?;
                let row = sqlx::query_as::<_, IpRule>(sql::REMOVE_IP)
                    .bind(r.id)
                    .bind(cidr)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| {
                        StoreError::NoSuchRule(format!("{name} has no IP entry for {cidr}"))
                    })?;
                Self::finish_change(
                    tx,
                    actor,
                    crate::AuditAction::RulesChange,
                    &r,
                    &format!("rm {cidr}"),
                )
                .await?;
                Ok(row)
            }

            async fn clear_rules(&self, actor: &str, name: &str) -> Result<u64> {
                let (mut tx, r) = self.begin_change(name).await?;
                let mut n = sqlx::query(sql::CLEAR_USERS)
                    .bind(r.id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                n += sqlx::query(sql::CLEAR_IPS)
                    .bind(r.id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                Self::finish_change(
                    tx,
                    actor,
                    crate::AuditAction::RulesChange,
                    &r,
                    &format!("clear {n}"),
                )
                .await?;
                Ok(n)
            }

            async fn create_share(
                &self,
                actor: &str,
                name: &str,
                s: &NewShare,
            ) -> Result<ShareLink> {
                let (mut tx, r) = self.begin_change(name).await?;
                let row = sqlx::query_as::<_, ShareLink>(sql::CREATE_SHARE)
                    .bind(r.id)
                    .bind(&s.token_hash)
                    .bind(crate::now())
                    .bind(s.expires_at)
                    .bind(s.uses)
                    .bind(actor)
                    .fetch_one(&mut *tx)
                    .await?;
                let uses = s
                    .uses
                    .map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
                let detail = format!("link {} expires {} uses {uses}", row.id, s.expires_at);
                Self::finish_change(tx, actor, crate::AuditAction::ShareCreate, &r, &detail)
                    .await?;
                Ok(row)
            }

            async fn revoke_share(&self, actor: &str, name: &str, id: i64) -> Result<ShareLink> {
                let (mut tx, r) = self.begin_change(name).await?;
                let row = sqlx::query_as::<_, ShareLink>(sql::REVOKE_SHARE)
                    .bind(id)
                    .bind(r.id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchShare {
                        name: name.to_owned(),
                        id,
                    })?;
                Self::finish_change(
                    tx,
                    actor,
                    crate::AuditAction::ShareRevoke,
                    &r,
                    &format!("link {id}"),
                )
                .await?;
                Ok(row)
            }

            async fn redeem_share(
                &self,
                name: &str,
                token_hash: &str,
                now: i64,
            ) -> Result<Option<ShareLink>> {
                let mut tx = self.writer.begin_with($begin).await?;
                let row = sqlx::query_as::<_, ShareLink>(sql::REDEEM)
                    .bind(token_hash)
                    .bind(now)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                let left = row
                    .uses_left
                    .map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
                let detail = format!("link {} uses left {left}", row.id);
                let owner: Option<(i64,)> =
                    sqlx::query_as("SELECT user_id FROM reservations WHERE id = $1")
                        .bind(row.reservation_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                audit!(
                    tx,
                    "visitor",
                    crate::AuditAction::ShareRedeem,
                    name,
                    owner.map(|o| o.0),
                    &detail
                );
                tx.commit().await?;
                Ok(Some(row))
            }

            async fn share_cookie_key(&self, fresh: &str) -> Result<String> {
                let key: Option<(String,)> = sqlx::query_as(sql::SHARE_KEY)
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some((key,)) = key {
                    return Ok(key);
                }
                sqlx::query(sql::ADD_SHARE_KEY)
                    .bind(fresh)
                    .bind(crate::now())
                    .execute(&self.writer)
                    .await?;
                let (key,): (String,) = sqlx::query_as(sql::SHARE_KEY)
                    .fetch_one(&self.writer)
                    .await?;
                Ok(key)
            }
        }
    };
}

use crate::backend::{PostgresStore, SqliteStore};

impl_rules!(SqliteStore, sqlx::Sqlite, "BEGIN IMMEDIATE");
impl_rules!(PostgresStore, sqlx::Postgres, "BEGIN");

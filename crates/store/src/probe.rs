//! Looking at a database without changing it, for `broker check`: can it be reached, and is
//! its schema the one this build expects? Opening a store for real ([`crate::open`]) creates a
//! missing SQLite file and applies pending migrations, which a check must never do.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Pool, Postgres, Sqlite};

use crate::{Result, StoreError};

static SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Where a database's schema stands against this build's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// Migrations this build has, all applied or not.
    pub known: usize,
    /// Of those, the ones the database has applied.
    pub applied: usize,
    /// Versions the database has applied that this build does not know: a newer broker
    /// migrated it.
    pub unknown: Vec<i64>,
}

impl Schema {
    /// Migrations `broker serve` (or `broker migrate`) would apply.
    pub fn pending(&self) -> usize {
        self.known - self.applied
    }
}

/// Connects to `url` read-only in effect (a SQLite file must exist already), and reads which
/// migrations it has applied.
pub async fn probe(url: &str) -> Result<Schema> {
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(false)
            .read_only(true);
        let pool: Pool<Sqlite> = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        let applied = applied_sqlite(&pool).await?;
        Ok(compare(&SQLITE, applied))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let pool: Pool<Postgres> = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let exists: (bool,) = sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&pool)
            .await?;
        let applied = if exists.0 {
            sqlx::query_as::<_, (i64,)>(APPLIED)
                .fetch_all(&pool)
                .await?
                .into_iter()
                .map(|r| r.0)
                .collect()
        } else {
            Vec::new()
        };
        Ok(compare(&POSTGRES, applied))
    } else {
        Err(StoreError::BadUrl(url.to_owned()))
    }
}

const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";

async fn applied_sqlite(pool: &Pool<Sqlite>) -> Result<Vec<i64>> {
    let exists: (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await?;
    if exists.0 == 0 {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as::<_, (i64,)>(APPLIED)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| r.0)
        .collect())
}

fn compare(migrator: &Migrator, applied: Vec<i64>) -> Schema {
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    Schema {
        known: known.len(),
        applied: applied.iter().filter(|v| known.contains(v)).count(),
        unknown: applied.into_iter().filter(|v| !known.contains(v)).collect(),
    }
}

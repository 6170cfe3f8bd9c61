//! What can go wrong in the store, worded for the person at the CLI or in the SSH session.

/// A store failure. The variants other than `Database`/`Migrate` are the caller's mistakes and
/// their messages are safe to show to users.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create_user` with a name in use.
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// A user name that is not in the store.
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    /// `add_key` with a fingerprint that is already registered.
    #[error("key {fingerprint} is already registered to user {owner:?}")]
    KeyExists {
        /// The key's fingerprint.
        fingerprint: String,
        /// Who holds it.
        owner: String,
    },
    /// A fingerprint that is not in the store.
    #[error("no key with fingerprint {0}")]
    NoSuchKey(String),
    /// `reserve` of a name held by another user.
    #[error("name {name:?} is reserved by another user")]
    NameTaken {
        /// The contested name.
        name: String,
        /// Its holder's user id (not shown to other tenants).
        owner_id: i64,
    },
    /// `release` of a name nobody holds.
    #[error("name {0:?} is not reserved")]
    NoSuchReservation(String),
    /// `delete_certificate` of a name with no certificate row.
    #[error("no certificate for {0:?}")]
    NoSuchCertificate(String),
    /// `create_token` with a name the user already gave another token.
    #[error("you already have a token named {0:?}")]
    TokenExists(String),
    /// A token id that is not in the store.
    #[error("no token with id {0}")]
    NoSuchToken(i64),
    /// A basic-auth user or IP entry that a reservation does not have (the message says which).
    #[error("{0}")]
    NoSuchRule(String),
    /// A share link id that the reservation does not have.
    #[error("{name} has no share link {id}")]
    NoSuchShare {
        /// The reservation's name.
        name: String,
        /// The link id asked for.
        id: i64,
    },
    /// A custom domain that is attached already: to this reservation, or (verified) to
    /// another.
    #[error("domain {0:?} is already attached")]
    DomainTaken(String),
    /// A webhook id that is not in the store.
    #[error("no webhook with id {0}")]
    NoSuchWebhook(i64),
    /// A custom domain that is not attached (the message says where it was looked for).
    #[error("no custom domain {0}")]
    NoSuchDomain(String),
    /// A database URL with an unknown scheme.
    #[error("database url {0:?} is neither sqlite:// nor postgres://")]
    BadUrl(String),
    /// The database said no.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed to apply.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database's notifications (`LISTEN`) cannot be read.
    #[error("database notifications: {0}")]
    Notifications(String),
}

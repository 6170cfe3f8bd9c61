//! Rows as the rest of the broker sees them.

/// A tenant: owns keys and names.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// Stable id.
    pub id: i64,
    /// Unique login name, chosen by the operator.
    pub name: String,
    /// May manage other users (console, later).
    pub is_admin: bool,
    /// Disabled users cannot authenticate and lose their live tunnels.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// A public key to register, already parsed and fingerprinted by the caller.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// `SHA256:…` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, …
    pub algorithm: String,
    /// The OpenSSH public key line without comment.
    pub public_key: String,
    /// The comment from the key line, if any.
    pub comment: String,
}

/// A registered public key and the user it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SshKey {
    /// Stable id.
    pub id: i64,
    /// Owner's id.
    pub user_id: i64,
    /// Owner's name, joined in for display.
    pub user_name: String,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// Key algorithm name.
    pub algorithm: String,
    /// OpenSSH public key line without comment.
    pub public_key: String,
    /// Free text from the key line.
    pub comment: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A subdomain label held by one user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Reservation {
    /// Stable id.
    pub id: i64,
    /// The label (`chat` in `chat.example.com`).
    pub name: String,
    /// Holder's id.
    pub user_id: i64,
    /// Holder's name, joined in for display.
    pub user_name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// One line of the audit log. `action` is a dotted verb (`user.disable`, `key.remove`,
/// `name.reserve`, `tunnel.bind`); the running broker reacts to some of them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEvent {
    /// Monotonic id assigned by the store (0 before it is recorded).
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who did it: `cli`, `ssh:alice`, …
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to (a user name, a fingerprint, a subdomain).
    pub subject: String,
    /// The user concerned, when there is one.
    pub user_id: Option<i64>,
    /// Free text.
    pub detail: String,
}

impl AuditEvent {
    /// A new event stamped now, to pass to `Store::record`.
    pub fn new(actor: &str, action: &str, subject: &str, user_id: Option<i64>) -> Self {
        Self {
            id: 0,
            at: crate::now(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            user_id,
            detail: String::new(),
        }
    }
}

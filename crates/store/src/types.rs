//! Rows as the rest of the broker sees them.

use crate::AuditAction;

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
    /// What it serves: `http`, `tls` (passthrough) or `tcp` (the name is `tcp:PORT`).
    pub kind: String,
}

/// One line of the audit log. `action` is the text of an [`AuditAction`] (`user.disable`,
/// `key.remove`, …); the running broker reacts to some of them.
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
    pub fn new(actor: &str, action: AuditAction, subject: &str, user_id: Option<i64>) -> Self {
        Self {
            id: 0,
            at: crate::now(),
            actor: actor.to_owned(),
            action: action.as_str().to_owned(),
            subject: subject.to_owned(),
            user_id,
            detail: String::new(),
        }
    }

    /// The action, when this broker knows it (a newer one may write others).
    pub fn kind(&self) -> Option<AuditAction> {
        self.action.parse().ok()
    }
}

/// The ACME account used with one CA directory. Created on first use and reused after, so a
/// broker does not open a new account at the CA on every start.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AcmeAccount {
    /// Stable id.
    pub id: i64,
    /// The CA's directory URL: one account per CA.
    pub directory_url: String,
    /// The account's credentials, encrypted by the caller; opaque to the store.
    pub credentials: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last replacement.
    pub updated_at: i64,
}

/// A certificate as issued, to store with [`crate::Store::put_certificate`]. Replacing a row
/// clears its `last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCertificate {
    /// `chat.example.com` or `*.example.com`, lowercase.
    pub name: String,
    /// The leaf and its intermediates, PEM.
    pub chain_pem: String,
    /// The leaf's private key, encrypted by the caller; opaque to the store.
    pub private_key: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The issuer's distinguished name, for display.
    pub issuer: String,
    /// How it was validated: `http-01`, `tls-alpn-01`, `dns-01`, or `manual`.
    pub challenge: String,
    /// When to renew it (Unix seconds).
    pub next_attempt: Option<i64>,
    /// The tenant it is charged to in the order budget (the user holding or binding the name);
    /// `None` for the broker's own names. Stored on the row and on the `cert.issue` event.
    pub owner: Option<i64>,
}

/// One managed certificate name and what the manager knows about it. The certificate columns
/// are `None` until the first order for the name succeeds (its failures are recorded before).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Certificate {
    /// Stable id.
    pub id: i64,
    /// `chat.example.com` or `*.example.com`.
    pub name: String,
    /// The leaf and its intermediates, PEM.
    pub chain_pem: Option<String>,
    /// The encrypted private key.
    pub private_key: Option<String>,
    /// Unix seconds.
    pub not_before: Option<i64>,
    /// Unix seconds.
    pub not_after: Option<i64>,
    /// The issuer's distinguished name.
    pub issuer: Option<String>,
    /// The challenge kind that validated the current certificate.
    pub challenge: Option<String>,
    /// Why the last attempt failed; `None` after a success.
    pub last_error: Option<String>,
    /// Unix seconds of the last order attempt, successful or not.
    pub last_attempt: Option<i64>,
    /// When the manager acts next (renewal or retry), Unix seconds.
    pub next_attempt: Option<i64>,
    /// Unix seconds.
    pub updated_at: i64,
    /// The tenant the name's orders are charged to; `None` for the broker's own names.
    pub owner_id: Option<i64>,
}

impl Certificate {
    /// The stored chain and encrypted key, when a certificate has been issued.
    pub fn material(&self) -> Option<(&str, &str)> {
        Some((self.chain_pem.as_deref()?, self.private_key.as_deref()?))
    }
}

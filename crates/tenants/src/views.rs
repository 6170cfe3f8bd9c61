//! What the service functions return: plain serialisable rows, the same for the API's JSON, the
//! CLI's `--json` and the SSH commands' `--json`.

use serde::Serialize;
use utoipa::ToSchema;

use crate::DefaultQuotas;

/// A user as others (and they themselves) see them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    /// Stable id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// May manage other users.
    pub is_admin: bool,
    /// Cannot sign in or connect; their tunnels were dropped.
    pub disabled: bool,
    /// Whether a console password is set.
    pub has_password: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// The quotas in force (their own where set, else the broker's defaults).
    pub quotas: DefaultQuotas,
}

/// A registered SSH public key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    pub algorithm: String,
    /// The comment of the key line.
    pub comment: String,
    /// The OpenSSH public key line without comment.
    pub public_key: String,
    /// Owner's name.
    pub user: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// An API token (never the token itself, which is shown once at creation).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    /// Stable id (for revoking).
    pub id: i64,
    /// Its name, unique per user.
    pub name: String,
    /// The first characters (`wrn_AbCd`).
    pub hint: String,
    /// `read`, `write` or `admin`.
    pub scope: String,
    /// Unix seconds, or none.
    pub expires_at: Option<i64>,
    /// Unix seconds of the last use (to the minute), or none.
    pub last_used_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Owner's name.
    pub user: String,
}

/// A token just created: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The secret, `wrn_…`: store it now, it cannot be shown again.
    pub token: String,
    /// The stored record.
    pub info: TokenView,
}

/// A reserved name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReservationView {
    /// The label (`chat`), or `tcp:PORT` for a TCP reservation.
    pub name: String,
    /// `http`, `tls` or `tcp`.
    pub kind: String,
    /// Where visitors reach it.
    pub url: String,
    /// Holder's name.
    pub user: String,
    /// Whether a tunnel is serving it right now (always false outside the running broker).
    pub live: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// A live tunnel.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TunnelView {
    /// The label, or `tcp:PORT`.
    pub name: String,
    /// `http`, `tls` or `tcp`.
    pub kind: String,
    /// Where visitors reach it.
    pub url: String,
    /// Owner's name.
    pub user: String,
    /// Unix seconds when the owner's current session bound it.
    pub since: u64,
    /// Requests served (HTTP), or connections opened (passthrough, TCP), since it came up.
    pub requests: u64,
    /// Bytes from visitors to the origin.
    pub bytes_in: u64,
    /// Bytes from the origin to visitors.
    pub bytes_out: u64,
    /// Visitor connections open right now.
    pub visitor_connections: u64,
    /// On a cluster, the node whose session holds it when that is not the node answering;
    /// the counts are then those of the visitors who reached it through the node answering.
    pub node: Option<String>,
}

/// One request a tunnel served, from the edge's in-memory log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequestView {
    /// Unix milliseconds when it arrived.
    pub at_ms: u64,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, with every query value replaced by `…`.
    pub path: String,
    /// The status sent (499: the visitor left before the answer).
    pub status: u16,
    /// Milliseconds until the response ended.
    pub duration_ms: u64,
    /// Body bytes from the visitor.
    pub bytes_in: u64,
    /// Body bytes to the visitor.
    pub bytes_out: u64,
    /// The visitor's address.
    pub visitor: String,
    /// The visitor's user agent (cut short).
    pub user_agent: String,
    /// The request's headers, `[name, value]`, as sent; credentials and cookies show `…`.
    pub headers: Vec<[String; 2]>,
    /// Whether the response was delivered whole.
    pub complete: bool,
}

impl From<&warren_registry::RequestEntry> for RequestView {
    fn from(e: &warren_registry::RequestEntry) -> Self {
        Self {
            at_ms: e.at_ms,
            method: e.method.to_string(),
            path: e.path.clone(),
            status: e.status,
            duration_ms: e.duration.as_millis() as u64,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            visitor: e.visitor.to_string(),
            user_agent: e.user_agent.clone(),
            headers: e
                .header_pairs()
                .map(|(k, v)| [k.to_owned(), v.to_owned()])
                .collect(),
            complete: e.complete,
        }
    }
}

/// One audit log entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// Monotonic id (the pagination cursor).
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who: `cli`, `ssh:alice`, `alice/console`, `alice/token:ci`.
    pub actor: String,
    /// What: `name.reserve`, `tunnel.bind`, …
    pub action: String,
    /// To what.
    pub subject: String,
    /// More.
    pub detail: String,
}

/// A certificate of one of the caller's names.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CertView {
    /// `chat.example.com`.
    pub name: String,
    /// Unix seconds, when issued.
    pub not_after: Option<i64>,
    /// The CA.
    pub issuer: Option<String>,
    /// Why the last order failed, if it did.
    pub last_error: Option<String>,
    /// When the manager acts next (renewal or retry).
    pub next_attempt: Option<i64>,
}

/// Where the broker has left one name's DNS records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnsState {
    /// The records point at the broker.
    Published,
    /// The provider refused the last change; the broker retries with backoff.
    Failing,
    /// The records were withdrawn (the name was released or its tunnel faded).
    Removed,
    /// Not done yet: the broker has the change queued.
    Pending,
    /// The broker manages no DNS: the operator's own records (a wildcard, typically) serve
    /// the name.
    Unmanaged,
}

/// The DNS state of one of the caller's names.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DnsView {
    /// The label: `chat`.
    pub name: String,
    /// The record's name: `chat.example.com`.
    pub fqdn: String,
    /// Where its records stand.
    pub state: DnsState,
    /// Unix seconds of the change (or first failure) that says so.
    pub since: Option<i64>,
    /// What the provider answered, while failing.
    pub last_error: Option<String>,
}

/// One page of a list that grows, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    /// The entries.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// A time as people read it in a listing, relative to now: `in 2h`, `3d ago`, `-` for none.
/// The CLI and the SSH commands print this; `--json` keeps the Unix seconds.
pub fn when(t: Option<i64>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let d = t - warren_store::now();
            let (secs, unit) = if d.abs() >= 86400 {
                (86400, "d")
            } else if d.abs() >= 3600 {
                (3600, "h")
            } else {
                (60, "m")
            };
            // To the nearest unit: a link made for 2h, listed a second later, expires "in 2h".
            let n = (d + d.signum() * secs / 2) / secs;
            if d >= 0 {
                format!("in {n}{unit}")
            } else {
                format!("{}{unit} ago", -n)
            }
        }
    }
}

/// Cuts `s` to `n` characters, marking the cut: listings stay in their columns (and in 80 of
/// them) whatever a tenant named things.
pub fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

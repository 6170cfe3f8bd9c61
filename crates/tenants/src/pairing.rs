//! Device pairing: an SSH key nobody has registered, that has proven it holds its private half,
//! waits here under a short code until a signed-in user approves it (the key joins that user)
//! or rejects it.
//!
//! The SSH side [issues](Pairings::issue) the code and keeps the receiving end of a one-shot
//! channel; the API looks the code up and decides through the service functions on
//! [`Tenants`], which wake the waiting session with the [`Decision`]. Nothing is written to the
//! store until a decision: a pending pairing is memory only, lost (with its session) on restart.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use tokio::sync::oneshot;
use utoipa::ToSchema;
use warren_store::{AuditAction, AuditEvent, NewKey, StoreError, User};

use crate::{Caller, KeyView, Result, Scope, ServiceError, Tenants};

/// How long a code is good for: long enough to open a link on another device and sign in.
pub const CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Codes are drawn from 32 letters and digits that cannot be mistaken for one another (no
/// 0/O, 1/I): 8 of them are 40 bits, which the per-caller limit below makes unguessable
/// within a code's 5 minutes (20 tries a minute against 2^40 codes).
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const CODE_LEN: usize = 8;
// A byte modulo 32 picks uniformly only from exactly 32 symbols.
const _: () = assert!(ALPHABET.len() == 32);

/// Pairings waiting at once, in all: each is a live SSH connection, and the per-address limit
/// alone would let many addresses hold many.
const MAX_PENDING: usize = 10_000;

/// What became of a pairing, as its waiting session is told.
#[derive(Debug, Clone)]
pub enum Decision {
    /// The key now belongs to `user`; `by` is who approved (the same user, through a door).
    Approved {
        /// The key's new owner.
        user: User,
        /// The approver as the audit log names them.
        by: String,
    },
    /// Someone said no.
    Rejected {
        /// The rejecting user's name.
        by: String,
    },
    /// The approval could not be carried out; the words say why.
    Failed(String),
}

/// A freshly issued code, for the session that will wait on it.
#[derive(Debug)]
pub struct Ticket {
    /// `XXXX-XXXX`.
    pub code: String,
    /// The console page where it is approved.
    pub link: String,
    /// The decision, when one is made; the sender is dropped when the code expires unused.
    pub decision: oneshot::Receiver<Decision>,
}

/// A pending pairing as the approver sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PairingView {
    /// `XXXX-XXXX`.
    pub code: String,
    /// `SHA256:…`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    pub algorithm: String,
    /// The comment the key will be registered with (may be empty).
    pub comment: String,
    /// The forwards the waiting session asked for, as asked (`chat:80`, `0:80 (random name)`).
    pub forwards: Vec<String>,
    /// The address the waiting session comes from.
    pub peer: String,
    /// Unix seconds after which the code is void.
    pub expires_at: i64,
}

struct Pending {
    key: NewKey,
    forwards: Vec<String>,
    peer: IpAddr,
    expires: Instant,
    expires_at: i64,
    wake: oneshot::Sender<Decision>,
}

/// Why a code was not issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// This address asked for too many codes lately.
    #[error("too many pairing codes asked from your address; try again in {} s", .0.as_secs().max(1))]
    TooMany(Duration),
    /// Too many pairings wait at once on this broker.
    #[error("too many pairings are waiting on this broker; try again later")]
    Full,
}

/// The pending pairings by code. A std `Mutex`: held for map edits only, never across an await.
pub struct Pairings {
    pending: Mutex<HashMap<String, Pending>>,
    /// `https://console.DOMAIN`: links are `{base}/pair/CODE`.
    link_base: String,
    /// Codes issued per client address: 5 at once, then one every 6 s (10 a minute).
    issued: DefaultKeyedRateLimiter<IpAddr>,
    /// Lookups and decisions per user, so codes cannot be guessed: 10 at once, then 20 a minute.
    asked: DefaultKeyedRateLimiter<i64>,
}

impl std::fmt::Debug for Pairings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairings")
            .field("link_base", &self.link_base)
            .finish_non_exhaustive()
    }
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The longest forward text shown to the approver (an address is a client's own words).
const FORWARD_TEXT_MAX: usize = 100;
/// The most forwards recorded for one waiting session.
const FORWARDS_SHOWN_MAX: usize = 64;

/// A code as typed or pasted (`abcd-efgh`, ` ABCDEFGH `) in its stored form, or `None` if it
/// cannot be one.
fn normalize(code: &str) -> Option<String> {
    let c: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (c.len() == CODE_LEN && c.bytes().all(|b| ALPHABET.contains(&b))).then_some(c)
}

/// `ABCDEFGH` → `ABCD-EFGH`.
fn display(code: &str) -> String {
    let (a, b) = code.split_at(CODE_LEN / 2);
    format!("{a}-{b}")
}

impl Pairings {
    /// Pairings whose links point at the console at `link_base` (no trailing slash).
    pub fn new(link_base: impl Into<String>) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            link_base: link_base.into().trim_end_matches('/').to_owned(),
            issued: RateLimiter::keyed(quota(10, 5)),
            asked: RateLimiter::keyed(quota(20, 10)),
        }
    }

    /// Issues a code for `key`, which has just proven itself from `peer`.
    pub fn issue(&self, key: NewKey, peer: IpAddr) -> std::result::Result<Ticket, IssueError> {
        self.issued.retain_recent();
        // IPv6 counts per /64, as warren-admit counts connections: one host has a whole /64.
        let source = match peer {
            IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
            v4 => v4,
        };
        self.issued
            .check_key(&source)
            .map_err(|nu| IssueError::TooMany(nu.wait_time_from(DefaultClock::default().now())))?;
        let (tx, rx) = oneshot::channel();
        let mut map = self.lock();
        sweep(&mut map);
        if map.len() >= MAX_PENDING {
            return Err(IssueError::Full);
        }
        // One code per key at a time: a key that connects again replaces its older code (whose
        // session is woken and told it expired), so one key cannot hold many.
        map.retain(|_, p| p.key.fingerprint != key.fingerprint);
        let code = loop {
            let c: String = (0..CODE_LEN)
                .map(|_| char::from(ALPHABET[usize::from(rand::random::<u8>() % 32)]))
                .collect();
            if !map.contains_key(&c) {
                break c;
            }
        };
        map.insert(
            code.clone(),
            Pending {
                key,
                forwards: Vec::new(),
                peer,
                expires: Instant::now() + CODE_LIFETIME,
                expires_at: now_unix() + CODE_LIFETIME.as_secs() as i64,
                wake: tx,
            },
        );
        let shown = display(&code);
        Ok(Ticket {
            link: self.link(&shown),
            code: shown,
            decision: rx,
        })
    }

    /// The console page of `code`.
    pub fn link(&self, code: &str) -> String {
        format!("{}/pair/{code}", self.link_base)
    }

    /// Records a forward the session waiting on `code` asked for, so the approver sees it.
    pub fn add_forward(&self, code: &str, mut forward: String) {
        let Some(c) = normalize(code) else { return };
        // What a client asks for is its own text: shown short, and only so many.
        if forward.len() > FORWARD_TEXT_MAX {
            let mut end = FORWARD_TEXT_MAX;
            while !forward.is_char_boundary(end) {
                end -= 1;
            }
            forward.truncate(end);
            forward.push('…');
        }
        if let Some(p) = self.lock().get_mut(&c)
            && p.forwards.len() < FORWARDS_SHOWN_MAX
        {
            p.forwards.push(forward);
        }
    }

    /// Drops `forward` from what the approver sees (the client cancelled it).
    pub fn remove_forward(&self, code: &str, forward: &str) {
        let Some(c) = normalize(code) else { return };
        if let Some(p) = self.lock().get_mut(&c)
            && let Some(i) = p.forwards.iter().position(|f| f == forward)
        {
            p.forwards.remove(i);
        }
    }

    /// Forgets `code`: its session ended, or gave up waiting.
    pub fn forget(&self, code: &str) {
        if let Some(c) = normalize(code) {
            self.lock().remove(&c);
        }
    }

    /// Pairings waiting now.
    pub fn len(&self) -> usize {
        let mut map = self.lock();
        sweep(&mut map);
        map.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One lookup or decision by `user`, or 429.
    fn count(&self, user: i64) -> Result<()> {
        self.asked.retain_recent();
        self.asked
            .check_key(&user)
            .map_err(|nu| ServiceError::RateLimited {
                retry_after: nu.wait_time_from(DefaultClock::default().now()),
            })
    }

    fn view(&self, code: &str, p: &Pending) -> PairingView {
        PairingView {
            code: display(code),
            fingerprint: p.key.fingerprint.clone(),
            algorithm: p.key.algorithm.clone(),
            comment: p.key.comment.clone(),
            forwards: p.forwards.clone(),
            peer: p.peer.to_string(),
            expires_at: p.expires_at,
        }
    }

    /// Takes the live pairing `code` out of the map: whoever takes it decides it, once.
    fn take(&self, code: &str) -> Result<(String, Pending)> {
        let c = normalize(code).ok_or_else(|| not_found(code))?;
        let mut map = self.lock();
        sweep(&mut map);
        map.remove(&c)
            .map(|p| (c, p))
            .ok_or_else(|| not_found(code))
    }

    /// Puts back a pairing whose approval failed on our side, so it can be tried again.
    /// Returns a pairing whose approval failed on the store, so it can be tried again; not if
    /// its session went meanwhile (nobody would be waiting for the forwards).
    fn put_back(&self, code: String, p: Pending) {
        if !p.wake.is_closed() {
            self.lock().insert(code, p);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Drops expired pairings; their senders go with them, which wakes their sessions.
fn sweep(map: &mut HashMap<String, Pending>) {
    let now = Instant::now();
    map.retain(|_, p| p.expires > now);
}

fn not_found(code: &str) -> ServiceError {
    let shown: String = code.chars().take(16).collect();
    ServiceError::NotFound(format!(
        "no pending pairing with code {shown:?} (codes expire after 5 minutes and work once)"
    ))
}

impl Tenants {
    fn pairings(&self) -> Result<&Pairings> {
        self.pairings.as_deref().ok_or_else(|| {
            ServiceError::NotFound("device pairing is off on this broker (pairing = false)".into())
        })
    }

    /// The pending pairing `code`: the key and the forwards it asked for. Any signed-in user
    /// with the write scope may look (the code is the secret); counted against the caller's
    /// lookups.
    pub fn pairing(&self, caller: &Caller, code: &str) -> Result<PairingView> {
        caller.require(Scope::Write)?;
        let pairings = self.pairings()?;
        pairings.count(caller.user.id)?;
        let c = normalize(code).ok_or_else(|| not_found(code))?;
        let mut map = pairings.lock();
        sweep(&mut map);
        map.get(&c)
            .map(|p| pairings.view(&c, p))
            .ok_or_else(|| not_found(code))
    }

    /// Registers the waiting key to the caller and wakes its session, which then binds the
    /// forwards it asked for. Single use: a second decision finds nothing (404).
    pub async fn approve_pairing(&self, caller: &Caller, code: &str) -> Result<KeyView> {
        caller.require(Scope::Write)?;
        let pairings = self.pairings()?;
        pairings.count(caller.user.id)?;
        let (c, p) = pairings.take(code)?;
        let added = self
            .store
            .add_key(&caller.actor(), &caller.user.name, &p.key)
            .await;
        let key = match added {
            Ok(k) => k,
            Err(StoreError::KeyExists { fingerprint, .. }) => {
                let _ = p.wake.send(Decision::Failed(
                    "this key was registered to an account meanwhile; reconnect".into(),
                ));
                return Err(ServiceError::Conflict(format!(
                    "key {fingerprint} is already registered to an account; nothing to pair"
                )));
            }
            Err(e) => {
                pairings.put_back(c, p);
                return Err(e.into());
            }
        };
        self.record_pairing(
            caller,
            AuditAction::PairingApprove,
            &p,
            Some(caller.user.id),
            format!("paired to {} from {}", caller.user.name, p.peer),
        )
        .await;
        // The session may have gone meanwhile: the key stays registered, as approved.
        let _ = p.wake.send(Decision::Approved {
            user: caller.user.clone(),
            by: caller.actor(),
        });
        Ok(crate::keys::view(key))
    }

    /// Refuses the waiting key; its session is told who said no and closed.
    pub async fn reject_pairing(&self, caller: &Caller, code: &str) -> Result<()> {
        caller.require(Scope::Write)?;
        let pairings = self.pairings()?;
        pairings.count(caller.user.id)?;
        let (_, p) = pairings.take(code)?;
        self.record_pairing(
            caller,
            AuditAction::PairingReject,
            &p,
            None,
            format!("rejected by {} (from {})", caller.user.name, p.peer),
        )
        .await;
        let _ = p.wake.send(Decision::Rejected {
            by: caller.user.name.clone(),
        });
        Ok(())
    }

    async fn record_pairing(
        &self,
        caller: &Caller,
        action: AuditAction,
        p: &Pending,
        owner: Option<i64>,
        detail: String,
    ) {
        let mut e = AuditEvent::new(&caller.actor(), action, &p.key.fingerprint, owner);
        e.detail = detail;
        if let Err(err) = self.store.record(&e).await {
            tracing::warn!(error = %err, "audit write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> NewKey {
        NewKey {
            fingerprint: "SHA256:abc".into(),
            algorithm: "ssh-ed25519".into(),
            public_key: "ssh-ed25519 AAAA".into(),
            comment: String::new(),
        }
    }

    #[test]
    fn codes_read_back_however_typed() {
        let p = Pairings::new("http://console.localhost:8080/");
        let t = p
            .issue(key(), IpAddr::from([127, 0, 0, 1]))
            .expect("issued");
        assert_eq!(t.code.len(), 9);
        assert_eq!(&t.code[4..5], "-");
        assert_eq!(
            t.link,
            format!("http://console.localhost:8080/pair/{}", t.code)
        );
        let typed = t.code.to_ascii_lowercase().replace('-', " ");
        assert_eq!(normalize(&typed).map(|c| display(&c)), Some(t.code.clone()));
        p.add_forward(&t.code, "chat:80".into());
        assert_eq!(p.len(), 1);
        assert!(p.take("ABCD-EFG0").is_err(), "0 is not in the alphabet");
        let (_, taken) = p.take(&typed).expect("taken once");
        assert_eq!(taken.forwards, ["chat:80"]);
        assert!(p.take(&t.code).is_err(), "single use");
    }

    #[test]
    fn lookups_per_user_are_limited() {
        let p = Pairings::new("http://c");
        for _ in 0..10 {
            p.count(1).expect("within the burst");
        }
        assert!(matches!(
            p.count(1),
            Err(ServiceError::RateLimited { retry_after }) if retry_after > Duration::ZERO
        ));
        assert!(p.count(2).is_ok(), "another user is not affected");
    }

    #[test]
    fn codes_per_address_are_limited() {
        let p = Pairings::new("http://c");
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..5 {
            p.issue(key(), ip).expect("within the burst");
        }
        assert!(matches!(p.issue(key(), ip), Err(IssueError::TooMany(_))));
        assert!(p.issue(key(), IpAddr::from([10, 0, 0, 2])).is_ok());
    }
}

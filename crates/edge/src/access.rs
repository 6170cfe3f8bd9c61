//! Access rules, enforced on every request (HTTP, HTTPS) and every connection (TLS
//! passthrough, raw TCP), from the registry's lock-free [`AccessPolicy`] of the name: no query
//! and no lock per request.
//!
//! - **IP lists** are checked on the real visitor address: the peer's, or, when the peer is a
//!   trusted proxy, the rightmost untrusted address of its `X-Forwarded-For`. Refused HTTP
//!   visitors get a 403 page; refused passthrough and TCP connections are closed.
//! - **Basic auth** (HTTP only) answers 401 with `WWW-Authenticate` until the visitor sends a
//!   user and password the policy knows. A checked `Authorization` value is remembered (by its
//!   SHA-256) in the policy's cache, so only a new credential costs an argon2 or bcrypt
//!   verification; verifications run on the blocking pool, at most [`VERIFYING`] at once, so a
//!   flood of wrong passwords costs at most that many cores.
//! - **Share links** (HTTP only): `/.well-known/warren-share/TOKEN[/path]` is answered here on
//!   every HTTP tunnel. The token is redeemed through the broker's [`ShareRedeemer`] (one use,
//!   atomically in the store), and the visitor gets a cookie for this host only, signed with
//!   the share key every node shares, and a redirect to the path. The cookie is honoured until
//!   the link expires, unless the link is revoked.
//!
//! A policy that asks for a password on a route that carries no requests (passthrough, TCP)
//! closes its connections: the rule cannot be checked there, so it fails closed.
//!
//! What the origin sees: the broker's own share cookie and the `Authorization: Basic` it
//! consumed are removed from the request; any other cookie or authorization passes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tracing::{debug, warn};
use warren_registry::access::{SHARE_PATH, is_share_token};
use warren_registry::{AccessPolicy, Route};

use crate::Edge;
use crate::pages::{Body, page, retry_page};

/// The cookie a share link sets.
pub const SHARE_COOKIE: &str = "warren_share";
/// Argon2 and bcrypt verifications at once, across all tunnels: the most CPU a flood of
/// wrong passwords can take (each new credential is verified once, then cached).
pub const VERIFYING: usize = 2;
/// How long a request waits for a verification slot before it gets 503.
const VERIFY_WAIT: Duration = Duration::from_secs(3);
/// Share-link redemptions (database writes) at once, across all tunnels.
const REDEEMING: usize = 4;

/// A share link used once: what the visitor's cookie will name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redeemed {
    /// The link's id.
    pub id: i64,
    /// Unix seconds; the cookie is honoured until then.
    pub expires_at: i64,
}

/// Uses a share link once. The broker implements it over the store's atomic redeem, so the
/// edge needs no database of its own.
#[async_trait::async_trait]
pub trait ShareRedeemer: Send + Sync + 'static {
    /// Uses the link with `token` on `name` once: `None` when it is unknown, expired, revoked
    /// or used up; `Err` when the store could not be asked.
    async fn redeem(&self, name: &str, token: &str) -> Result<Option<Redeemed>, String>;
}

/// The edge's access machinery, shared by every visitor.
pub(crate) struct Gate {
    verifying: Arc<Semaphore>,
    shares: Option<Shares>,
}

struct Shares {
    redeemer: Arc<dyn ShareRedeemer>,
    key: Vec<u8>,
    redeeming: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            verifying: Arc::new(Semaphore::new(VERIFYING)),
            shares: None,
        }
    }
}

impl Gate {
    pub(crate) fn with_shares(&mut self, redeemer: Arc<dyn ShareRedeemer>, key: Vec<u8>) {
        self.shares = Some(Shares {
            redeemer,
            key,
            redeeming: Semaphore::new(REDEEMING),
        });
    }
}

/// The address the rules are checked against: the peer, or behind trusted proxies the
/// rightmost `X-Forwarded-For` hop that is not one of them (the leftmost entries are whatever
/// the visitor wrote). An entry that does not parse stops the walk at the hop after it.
pub(crate) fn visitor_ip(edge: &Edge, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !edge.trusts_ip(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all(HeaderName::from_static("x-forwarded-for"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut ip = peer;
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(hop) => {
                ip = hop;
                if !edge.trusts_ip(&hop) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    ip
}

/// Whether a passthrough or TCP connection from `peer` may go on under `policy`.
pub(crate) fn admits_stream(route: &Route, policy: &AccessPolicy, peer: SocketAddr) -> bool {
    let ok = policy.admits(peer.ip()) && !policy.wants_credentials();
    if !ok {
        let why = if policy.wants_credentials() {
            "the name asks for a password, which only HTTP routes can check"
        } else {
            "the IP rules"
        };
        route
            .endpoint
            .notify(format!("connection from {peer} refused by {why}"));
    }
    ok
}

/// Applies `route`'s access rules to an HTTP request for `label`: `Some(answer)` when the edge
/// answers it itself (refusal, share link), `None` to proxy it (with the broker's own
/// credentials removed).
pub(crate) async fn check<B>(
    edge: &Edge,
    peer: SocketAddr,
    tls: bool,
    route: &Route,
    req: &mut Request<B>,
    label: &str,
    host: &str,
) -> Option<Response<Body>> {
    // Taken out before anything else, so the origin never sees it whatever happens next.
    let share_cookies = take_share_cookies(req.headers_mut());
    let policy = edge.registry.policy_for(route);
    if let Some(policy) = &policy {
        let ip = visitor_ip(edge, peer.ip(), req.headers());
        if !policy.admits(ip) {
            return Some(page(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "Visitors from {ip} may not open {host}: its owner's IP rules keep them out."
                ),
            ));
        }
    }
    // Share links are the broker's on every HTTP tunnel, protected or not (a link made a
    // moment ago may be opened before this name's policy shows its first user).
    if let Some(rest) = req.uri().path().strip_prefix(SHARE_PATH) {
        let rest = rest.to_owned();
        return Some(redeem(edge, tls, req, label, &rest).await);
    }
    let policy = policy?;
    if !policy.wants_credentials() {
        return None;
    }
    if has_share_cookie(edge, &policy, &share_cookies, label) {
        return None;
    }
    match basic(edge, &policy, req.headers()).await {
        Basic::Good => {
            req.headers_mut().remove(header::AUTHORIZATION);
            None
        }
        Basic::Missing | Basic::Wrong => Some(unauthorized(host)),
        Basic::Busy => Some(retry_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "Too many sign-ins are being checked right now. Try again in a moment.",
            1,
        )),
    }
}

fn unauthorized(host: &str) -> Response<Body> {
    let mut resp = page(
        StatusCode::UNAUTHORIZED,
        "Sign in",
        &format!("{host} asks for a user name and password."),
    );
    let realm = host.replace(['"', '\\'], "");
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

enum Basic {
    Good,
    Missing,
    Wrong,
    Busy,
}

/// Checks the request's `Authorization: Basic` against the policy's users, from the cache
/// when this exact value was checked before.
async fn basic(edge: &Edge, policy: &Arc<AccessPolicy>, headers: &HeaderMap) -> Basic {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Basic::Missing;
    };
    let raw = value.as_bytes();
    let Some(b64) = raw
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case(b"basic "))
        .and_then(|_| raw.get(6..))
    else {
        return Basic::Missing;
    };
    let tag = policy.cache().tag(raw);
    match policy.cache().get(tag) {
        Some(true) => return Basic::Good,
        Some(false) => return Basic::Wrong,
        None => {}
    }
    let Some((user, password)) = STANDARD
        .decode(b64.trim_ascii())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
    else {
        return Basic::Wrong;
    };
    let Some(hash) = policy.user(&user).map(|c| c.hash.clone()) else {
        // Unknown users are remembered as wrong like wrong passwords: no hashing either way.
        policy.cache().put(tag, false);
        return Basic::Wrong;
    };
    let permit = match tokio::time::timeout(
        VERIFY_WAIT,
        edge.access.verifying.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        _ => return Basic::Busy,
    };
    let ok = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        verify(&hash, &password)
    })
    .await
    .unwrap_or(false);
    policy.cache().put(tag, ok);
    if ok { Basic::Good } else { Basic::Wrong }
}

/// Whether `password` matches `hash`: argon2 (PHC string) or bcrypt (`$2y$`, `$2a$`, `$2b$`).
pub(crate) fn verify(hash: &str, password: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    if hash.starts_with("$2") {
        bcrypt::verify(password, hash).unwrap_or(false)
    } else if hash.starts_with("$argon2") {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
    } else {
        false
    }
}

/// Answers a share link: redeem the token, set the cookie, redirect to the path after it.
async fn redeem<B>(
    edge: &Edge,
    tls: bool,
    req: &Request<B>,
    label: &str,
    rest: &str,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "Share links are opened with GET.",
        );
    }
    let not_valid = || {
        page(
            StatusCode::FORBIDDEN,
            "Share link not valid",
            "This share link has expired, was revoked or has been used up. Ask whoever sent it for a new one.",
        )
    };
    let Some(shares) = &edge.access.shares else {
        return not_valid();
    };
    let (token, after) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !is_share_token(token) {
        return not_valid();
    }
    let Ok(_permit) = shares.redeeming.try_acquire() else {
        return retry_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "Too many share links are being opened right now. Try again in a moment.",
            1,
        );
    };
    let redeemed = match shares.redeemer.redeem(label, token).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_valid(),
        Err(e) => {
            warn!(error = %e, "share link redemption failed");
            return retry_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "The share link could not be checked just now.",
                2,
            );
        }
    };
    debug!(link = redeemed.id, "share link redeemed");
    // Only a path on this host: `//elsewhere` would be an open redirect.
    let mut target = if after.starts_with('/') && !after.starts_with("//") && !after.contains('\\')
    {
        after.to_owned()
    } else {
        "/".to_owned()
    };
    if let Some(q) = req.uri().query() {
        target.push('?');
        target.push_str(q);
    }
    let now = now();
    let cookie = format!(
        "{SHARE_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        sign(&shares.key, label, redeemed.id, redeemed.expires_at),
        (redeemed.expires_at - now).max(0),
        if tls { "; Secure" } else { "" }
    );
    let mut resp = page(
        StatusCode::SEE_OTHER,
        "Welcome",
        &format!("The share link worked: on to {target}."),
    );
    let h = resp.headers_mut();
    for (name, value) in [
        (header::LOCATION, target.as_str()),
        (header::SET_COOKIE, cookie.as_str()),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    resp
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The MAC of one cookie (`None` never happens: HMAC takes keys of any length).
fn mac(key: &[u8], label: &str, id: i64, expires_at: i64) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
    mac.update(format!("v1|{label}|{id}|{expires_at}").as_bytes());
    Some(mac)
}

/// The cookie value for link `id` on `label`: `v1.ID.EXPIRES.SIGNATURE`. The name is signed,
/// not written: a cookie carried to another host does not verify there.
fn sign(key: &[u8], label: &str, id: i64, expires_at: i64) -> String {
    let sig = mac(key, label, id, expires_at)
        .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("v1.{id}.{expires_at}.{sig}")
}

/// Whether `value` is a cookie signed for `label` that `policy` honours at `now`.
fn verify_cookie(key: &[u8], policy: &AccessPolicy, label: &str, value: &str, now: i64) -> bool {
    let mut parts = value.split('.');
    let (Some("v1"), Some(id), Some(exp), Some(sig), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(id), Ok(exp), Ok(sig)) = (
        id.parse::<i64>(),
        exp.parse::<i64>(),
        URL_SAFE_NO_PAD.decode(sig),
    ) else {
        return false;
    };
    exp > now
        && mac(key, label, id, exp).is_some_and(|m| m.verify_slice(&sig).is_ok())
        && policy.honours_share(id, now)
}

/// The `name=value` pairs of every `Cookie` header.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

fn has_share_cookie(edge: &Edge, policy: &AccessPolicy, values: &[String], label: &str) -> bool {
    let Some(shares) = &edge.access.shares else {
        return false;
    };
    let now = now();
    values
        .iter()
        .any(|value| verify_cookie(&shares.key, policy, label, value, now))
}

/// Takes the broker's share cookies out of the request (so the origin never sees them) and
/// returns their values; other cookies stay, in order. Costs one substring search when there
/// is none (almost every request).
fn take_share_cookies(headers: &mut HeaderMap) -> Vec<String> {
    let present = headers.get_all(header::COOKIE).iter().any(|v| {
        v.as_bytes()
            .windows(SHARE_COOKIE.len())
            .any(|w| w == SHARE_COOKIE.as_bytes())
    });
    if !present {
        return Vec::new();
    }
    let mut ours = Vec::new();
    let mut kept = Vec::new();
    for (name, value) in cookies(headers) {
        if name == SHARE_COOKIE {
            ours.push(value.to_owned());
        } else {
            kept.push(format!("{name}={value}"));
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_bound_to_the_name_and_the_link() {
        let key = b"k".to_vec();
        let policy = AccessPolicy::new(1)
            .with_share(3, 2000, true)
            .with_share(4, 2000, false);
        let c = sign(&key, "chat", 3, 2000);
        assert!(verify_cookie(&key, &policy, "chat", &c, 1000));
        assert!(
            !verify_cookie(&key, &policy, "other", &c, 1000),
            "another host"
        );
        assert!(
            !verify_cookie(b"x", &policy, "chat", &c, 1000),
            "another key"
        );
        assert!(!verify_cookie(&key, &policy, "chat", &c, 2000), "expired");
        let revoked = sign(&key, "chat", 4, 2000);
        assert!(
            !verify_cookie(&key, &policy, "chat", &revoked, 1000),
            "revoked"
        );
        let forged = c.replace("v1.3.2000", "v1.3.9000");
        assert!(
            !verify_cookie(&key, &policy, "chat", &forged, 1000),
            "extended"
        );
        for junk in ["", "v1", "v1.3.2000", "v1.3.2000.x.y", "v2.3.2000.AAAA"] {
            assert!(!verify_cookie(&key, &policy, "chat", junk, 1000), "{junk}");
        }
    }

    #[test]
    fn the_share_cookie_never_reaches_the_origin() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; warren_share=v1.x; b=2"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("warren_share=v1.y"),
        );
        assert_eq!(take_share_cookies(&mut h), ["v1.x", "v1.y"]);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, [HeaderValue::from_static("a=1; b=2")]);
        let mut only = HeaderMap::new();
        only.insert(
            header::COOKIE,
            HeaderValue::from_static("warren_share=v1.x"),
        );
        take_share_cookies(&mut only);
        assert!(only.get(header::COOKIE).is_none());
        let mut none = HeaderMap::new();
        none.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        assert!(take_share_cookies(&mut none).is_empty());
        assert_eq!(
            none.get(header::COOKIE),
            Some(&HeaderValue::from_static("a=1"))
        );
    }

    #[test]
    fn the_visitor_is_the_rightmost_untrusted_hop() {
        let settings = crate::EdgeSettings {
            trusted_proxies: vec![
                "127.0.0.1/32".parse().expect("net"),
                "10.0.0.0/8".parse().expect("net"),
            ],
            ..Default::default()
        };
        let edge = Edge::new(
            settings,
            Arc::new(warren_registry::Registry::new(Duration::ZERO, 1)),
        );
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let with = |xff: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in xff {
                h.append("x-forwarded-for", HeaderValue::from_static(v));
            }
            h
        };
        // An untrusted peer is the visitor, whatever it claims.
        assert_eq!(
            visitor_ip(&edge, ip("192.0.2.1"), &with(&["198.51.100.1"])),
            ip("192.0.2.1")
        );
        // Behind trusted proxies: the first hop from the right that is not one of them.
        let chain = with(&["203.0.113.5, 198.51.100.1", "10.1.1.1"]);
        assert_eq!(
            visitor_ip(&edge, ip("127.0.0.1"), &chain),
            ip("198.51.100.1")
        );
        assert_eq!(
            visitor_ip(&edge, ip("::ffff:127.0.0.1"), &chain),
            ip("198.51.100.1")
        );
        // Garbage stops the walk at the last hop that parsed; no header leaves the peer.
        assert_eq!(
            visitor_ip(&edge, ip("127.0.0.1"), &with(&["junk, 10.2.2.2"])),
            ip("10.2.2.2")
        );
        assert_eq!(
            visitor_ip(&edge, ip("127.0.0.1"), &with(&[])),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn verifies_argon2_and_bcrypt() {
        let b = bcrypt::hash("correct horse", 4).expect("bcrypt");
        assert!(verify(&b, "correct horse"));
        assert!(!verify(&b, "wrong"));
        let y = b.replacen("$2b$", "$2y$", 1);
        assert!(verify(&y, "correct horse"), "htpasswd's $2y$");
        use argon2::password_hash::PasswordHasher;
        let a = argon2::Argon2::default()
            .hash_password(b"correct horse")
            .expect("argon2")
            .to_string();
        assert!(verify(&a, "correct horse"));
        assert!(!verify(&a, "wrong"));
        assert!(!verify("plain", "plain"));
    }
}

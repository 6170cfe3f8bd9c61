//! Who is calling: an API token (`Authorization: Bearer wrn_…`) or a console session cookie
//! (an HS256 JWT naming a row of `login_sessions`, plus a CSRF token for anything that
//! changes state).
//!
//! Session cookies are checked against the store so that logging out (or out everywhere, or a
//! disable, or a password reset) ends them at once; the answer is cached for at most a second
//! per session, so a busy console costs one query a second, not one per request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use warren_store::{LoginSession, SigningKey};
use warren_tenants::{Caller, Scope, ServiceError, Via};

use crate::ApiState;
use crate::error::ApiError;

/// The session cookie's name.
pub const COOKIE: &str = "warren_session";
/// The header that carries the CSRF token on state-changing cookie requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a console sign-in lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
/// How long a session's store check is trusted.
const SESSION_CHECK_TTL: Duration = Duration::from_secs(1);

/// What a session cookie's JWT carries.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: i64,
    /// The `login_sessions` row.
    pub sid: String,
    /// The CSRF token the console must echo in `X-CSRF-Token`.
    pub csrf: String,
    /// Unix seconds.
    pub exp: i64,
    /// Unix seconds.
    pub iat: i64,
}

/// Signing keys (from the store, shared by every node) and the session check cache.
pub struct Sessions {
    keys: Mutex<(Instant, Vec<SigningKey>)>,
    checked: Mutex<HashMap<String, (Instant, bool)>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// A fresh random secret, base64 (256 bits).
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    STANDARD.encode(bytes)
}

fn random_id() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex_lower(&bytes)
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Sessions {
    /// Loads the signing keys, creating the first one if the store has none.
    pub async fn load(store: &dyn warren_store::Store) -> warren_store::Result<Self> {
        store.ensure_signing_key(&random_secret()).await?;
        let keys = Self::fetch(store).await?;
        Ok(Self {
            keys: Mutex::new((Instant::now(), keys)),
            checked: Mutex::new(HashMap::new()),
        })
    }

    async fn fetch(store: &dyn warren_store::Store) -> warren_store::Result<Vec<SigningKey>> {
        let since = warren_store::now() - SESSION_LIFETIME.as_secs() as i64;
        store.signing_keys(since).await
    }

    /// The keys, re-read from the store when a minute old or when `kid` is unknown (another
    /// node rotated).
    async fn keys(
        &self,
        store: &dyn warren_store::Store,
        kid: Option<i64>,
    ) -> Result<Vec<SigningKey>, ApiError> {
        {
            let guard = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = guard.0.elapsed() < Duration::from_secs(60);
            let known = kid.is_none_or(|k| guard.1.iter().any(|s| s.id == k));
            if fresh && known {
                return Ok(guard.1.clone());
            }
        }
        let keys = Self::fetch(store).await.map_err(ServiceError::from)?;
        *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = (Instant::now(), keys.clone());
        Ok(keys)
    }

    /// Starts a session for `user_id`: the row, and the cookie value (JWT) and CSRF token.
    pub async fn start(
        &self,
        state: &ApiState,
        user_id: i64,
        actor: &str,
    ) -> Result<(String, Claims), ApiError> {
        let store = state.tenants.store.as_ref();
        let now = warren_store::now();
        let session = LoginSession {
            id: random_id(),
            user_id,
            created_at: now,
            expires_at: now + SESSION_LIFETIME.as_secs() as i64,
        };
        store
            .create_login_session(actor, &session)
            .await
            .map_err(ServiceError::from)?;
        let key = self
            .keys(store, None)
            .await?
            .into_iter()
            .find(|k| k.retired_at.is_none())
            .ok_or_else(|| ServiceError::Internal("no signing key".into()))?;
        let claims = Claims {
            sub: user_id,
            sid: session.id,
            csrf: random_id(),
            exp: session.expires_at,
            iat: now,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.id.to_string());
        let secret = STANDARD
            .decode(&key.secret)
            .map_err(|e| ServiceError::Internal(format!("signing key: {e}")))?;
        let jwt = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret))
            .map_err(|e| ServiceError::Internal(format!("jwt: {e}")))?;
        Ok((jwt, claims))
    }

    /// The claims of a cookie whose signature, expiry and session row all check out.
    pub async fn verify(
        &self,
        store: &dyn warren_store::Store,
        jwt: &str,
    ) -> Result<Claims, ApiError> {
        let expired = || {
            ApiError::from(ServiceError::Unauthorized(
                "your session has ended; sign in again".into(),
            ))
        };
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| expired())?;
        let kid = header
            .kid
            .as_deref()
            .and_then(|k| k.parse::<i64>().ok())
            .ok_or_else(expired)?;
        let keys = self.keys(store, Some(kid)).await?;
        let key = keys.iter().find(|k| k.id == kid).ok_or_else(expired)?;
        let secret = STANDARD.decode(&key.secret).map_err(|_| expired())?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let claims =
            jsonwebtoken::decode::<Claims>(jwt, &DecodingKey::from_secret(&secret), &validation)
                .map_err(|_| expired())?
                .claims;
        if !self.live(store, &claims.sid).await? {
            return Err(expired());
        }
        Ok(claims)
    }

    async fn live(&self, store: &dyn warren_store::Store, sid: &str) -> Result<bool, ApiError> {
        if let Some((at, ok)) = self
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sid)
            && at.elapsed() < SESSION_CHECK_TTL
        {
            return Ok(*ok);
        }
        let now = warren_store::now();
        let ok = store
            .login_session(sid)
            .await
            .map_err(ServiceError::from)?
            .is_some_and(|s| s.expires_at > now);
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if checked.len() > 10_000 {
            checked.retain(|_, (at, _)| at.elapsed() < SESSION_CHECK_TTL);
        }
        checked.insert(sid.to_owned(), (Instant::now(), ok));
        Ok(ok)
    }

    /// Forgets the cached check of `sid` (after this node ended it).
    pub fn forget(&self, sid: &str) {
        self.checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sid);
    }
}

/// Login attempts per client address and per user name (GCRA, `governor`).
pub struct LoginLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_user: DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimiter").finish_non_exhaustive()
    }
}

impl Default for LoginLimiter {
    /// 10 attempts per address and 5 per user name in a burst, refilled one a minute (per user)
    /// and one every 6 s (per address): enough for people who mistype, too slow to guess.
    fn default() -> Self {
        let ip = Quota::per_minute(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
        let user = Quota::per_minute(NonZeroU32::MIN)
            .allow_burst(NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN));
        Self {
            by_ip: RateLimiter::keyed(ip),
            by_user: RateLimiter::keyed(user),
        }
    }
}

impl LoginLimiter {
    /// `Ok` if `ip` and `user` may try now, else 429 with when to retry.
    pub fn check(&self, ip: IpAddr, user: &str) -> Result<(), ServiceError> {
        if self.by_ip.len() > 100_000 {
            self.by_ip.retain_recent();
        }
        if self.by_user.len() > 100_000 {
            self.by_user.retain_recent();
        }
        let clock = governor::clock::DefaultClock::default();
        let wait = |nu: governor::NotUntil<_>| ServiceError::RateLimited {
            retry_after: nu.wait_time_from(clock.now()),
        };
        self.by_ip.check_key(&ip).map_err(wait)?;
        let user: String = user.chars().take(64).collect();
        self.by_user.check_key(&user).map_err(wait)?;
        Ok(())
    }
}

/// The client's address: set by the edge when the API is reached through the console host, or
/// the peer of the admin listener.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(addr) = parts.extensions.get::<SocketAddr>() {
            return Ok(ClientIp(addr.ip()));
        }
        if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            return Ok(ClientIp(addr.ip()));
        }
        Ok(ClientIp(IpAddr::from([0, 0, 0, 0])))
    }
}

/// An authenticated caller (token or session), with the session's claims when it is one.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Who.
    pub caller: Caller,
    /// The session, for cookie callers.
    pub session: Option<SessionInfo>,
}

/// The parts of a session the handlers need.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The `login_sessions` row id.
    pub sid: String,
    /// The CSRF token.
    pub csrf: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<ApiState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    ServiceError::Unauthorized("use Authorization: Bearer wrn_…".into())
                })?;
            let caller = state.tenants.authenticate_token(token.trim()).await?;
            return Ok(Auth {
                caller,
                session: None,
            });
        }
        let Some(jwt) = session_cookie(parts) else {
            return Err(ServiceError::Unauthorized(
                "sign in, or send an API token (Authorization: Bearer wrn_…)".into(),
            )
            .into());
        };
        let claims = state
            .sessions
            .verify(state.tenants.store.as_ref(), &jwt)
            .await?;
        let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if unsafe_method {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !constant_time_eq(sent, claims.csrf.as_bytes()) {
                return Err(ServiceError::Forbidden(format!(
                    "missing or wrong {CSRF_HEADER} header (the session's csrf_token)"
                ))
                .into());
            }
        }
        let user = state
            .tenants
            .store
            .user_by_id(claims.sub)
            .await
            .map_err(ServiceError::from)?
            .filter(|u| !u.disabled)
            .ok_or_else(|| {
                ServiceError::Unauthorized("your session has ended; sign in again".into())
            })?;
        let scope = if user.is_admin {
            Scope::Admin
        } else {
            Scope::Write
        };
        Ok(Auth {
            caller: Caller::new(user, scope, Via::Console),
            session: Some(SessionInfo {
                sid: claims.sid,
                csrf: claims.csrf,
                expires_at: claims.exp,
            }),
        })
    }
}

//! Signing in and out of the console, and the first admin's setup link.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warren_tenants::{Caller, Scope, ServiceError, UserView, Via};

use super::ApiJson;
use crate::ApiState;
use crate::auth::{Auth, COOKIE, ClientIp, SESSION_LIFETIME};
use crate::error::{ApiResult, ErrorBody};

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct LoginRequest {
    /// User name.
    name: String,
    /// Password.
    password: String,
}

/// A console session.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionView {
    /// Who is signed in.
    user: UserView,
    /// Send this as `X-CSRF-Token` on every request that changes state.
    csrf_token: String,
    /// Unix seconds.
    expires_at: i64,
}

fn cookie(state: &ApiState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn signed_in(state: &ApiState, user: warren_store::User) -> ApiResult<Response> {
    let scope = if user.is_admin {
        Scope::Admin
    } else {
        Scope::Write
    };
    let caller = Caller::new(user, scope, Via::Console);
    let (jwt, claims) = state
        .sessions
        .start(state, caller.user.id, &caller.actor())
        .await?;
    let view = SessionView {
        user: state.tenants.me(&caller).await?,
        csrf_token: claims.csrf,
        expires_at: claims.exp,
    };
    let mut resp = axum::Json(view).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        cookie(state, &jwt, SESSION_LIFETIME.as_secs()),
    );
    Ok(resp)
}

/// Sign in: sets the session cookie and returns the CSRF token.
#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = LoginRequest,
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn login(
    State(state): State<ApiState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    state.limiter.check(ip, &req.name)?;
    let user = state
        .tenants
        .check_password(&req.name, &req.password)
        .await?;
    signed_in(&state, user).await
}

/// The current session (cookie callers).
#[utoipa::path(get, path = "/api/v1/session", tag = "session",
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("session" = [])))]
pub(crate) async fn current(
    State(state): State<ApiState>,
    auth: Auth,
) -> ApiResult<axum::Json<SessionView>> {
    let s = auth.session.ok_or_else(|| {
        ServiceError::NotFound("no session: this request used an API token".into())
    })?;
    Ok(axum::Json(SessionView {
        user: state.tenants.me(&auth.caller).await?,
        csrf_token: s.csrf,
        expires_at: s.expires_at,
    }))
}

/// Sign out (this session).
#[utoipa::path(delete, path = "/api/v1/session", tag = "session",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("session" = [])))]
pub(crate) async fn logout(State(state): State<ApiState>, auth: Auth) -> ApiResult<Response> {
    let s = auth.session.ok_or_else(|| {
        ServiceError::NotFound("no session: this request used an API token".into())
    })?;
    state
        .tenants
        .store
        .end_login_session(&auth.caller.actor(), &s.sid)
        .await
        .map_err(ServiceError::from)?;
    state.sessions.forget(&s.sid);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, "", 0));
    Ok(resp)
}

/// Sign out everywhere: every session of the caller ends at once.
#[utoipa::path(post, path = "/api/v1/session/logout-all", tag = "session",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("session" = []), ("token" = [])))]
pub(crate) async fn logout_all(State(state): State<ApiState>, auth: Auth) -> ApiResult<Response> {
    auth.caller.require(Scope::Write)?;
    state
        .tenants
        .store
        .end_login_sessions_of(&auth.caller.actor(), auth.caller.user.id)
        .await
        .map_err(ServiceError::from)?;
    if let Some(s) = &auth.session {
        state.sessions.forget(&s.sid);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, "", 0));
    Ok(resp)
}

/// The first admin's one-time setup.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SetupRequest {
    /// The token from the link `broker serve` printed.
    token: String,
    /// The admin's user name: an existing admin without a password, or a new one.
    #[schema(pattern = "^[a-z0-9._-]{1,64}$")]
    name: String,
    /// Their password (at least 10 characters).
    #[schema(min_length = 10, max_length = 1024)]
    password: String,
}

/// First run: set the first admin's password with the one-time link `broker serve` printed
/// (valid one hour, single use), and sign in.
#[utoipa::path(post, path = "/api/v1/setup", tag = "session", request_body = SetupRequest,
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn setup(
    State(state): State<ApiState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<SetupRequest>,
) -> ApiResult<Response> {
    state.limiter.check(ip, "setup")?;
    let user = state
        .tenants
        .first_admin(&req.token, &req.name, &req.password)
        .await?;
    signed_in(&state, user).await
}

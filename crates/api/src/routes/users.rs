//! Oneself, and users (admin).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use warren_store::Quotas;
use warren_tenants::{Scope, ServiceError, UserView};

use super::{ApiJson, ApiPath};
use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// The caller.
#[utoipa::path(get, path = "/api/v1/me", tag = "users",
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn me(
    State(state): State<ApiState>,
    auth: Auth,
) -> ApiResult<axum::Json<UserView>> {
    Ok(axum::Json(state.tenants.me(&auth.caller).await?))
}

/// A password change by its owner.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct OwnPassword {
    /// The password now (required when one is set).
    current_password: Option<String>,
    /// The new password (at least 10 characters).
    #[schema(min_length = 10, max_length = 1024)]
    password: String,
}

/// Change one's own password; every console session of the user ends.
#[utoipa::path(put, path = "/api/v1/me/password", tag = "users", request_body = OwnPassword,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn change_own_password(
    State(state): State<ApiState>,
    auth: Auth,
    ApiJson(req): ApiJson<OwnPassword>,
) -> ApiResult<StatusCode> {
    let me = &auth.caller.user;
    // The password opens a console session with all of the user's powers: a token may set it
    // only if it carries them all itself.
    auth.caller.require(if me.is_admin {
        Scope::Admin
    } else {
        Scope::Write
    })?;
    if let Some((_, Some(_))) = state
        .tenants
        .store
        .password_of(&me.name)
        .await
        .map_err(ServiceError::from)?
    {
        let current = req.current_password.unwrap_or_default();
        if state
            .tenants
            .check_password(&me.name, &current)
            .await
            .is_err()
        {
            return Err(
                ServiceError::invalid("current_password", "is not your current password").into(),
            );
        }
    }
    state
        .tenants
        .set_password(&auth.caller, &me.name, &req.password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every user (admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = Vec<UserView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    auth: Auth,
) -> ApiResult<axum::Json<Vec<UserView>>> {
    Ok(axum::Json(state.tenants.users(&auth.caller).await?))
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewUser {
    /// Login name: 1-64 of lowercase letters, digits, '-', '_', '.'.
    #[schema(pattern = "^[a-z0-9._-]{1,64}$")]
    name: String,
    /// May administer others.
    #[serde(default)]
    is_admin: bool,
    /// A console password (at least 10 characters); none: SSH keys and tokens only.
    #[schema(min_length = 10, max_length = 1024)]
    password: Option<String>,
}

/// Create a user (admin).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = UserView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn create(
    State(state): State<ApiState>,
    auth: Auth,
    ApiJson(req): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, axum::Json<UserView>)> {
    let u = state
        .tenants
        .create_user(
            &auth.caller,
            &req.name,
            req.is_admin,
            req.password.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(u)))
}

/// One user (oneself, or anyone for an admin).
#[utoipa::path(get, path = "/api/v1/users/{name}", tag = "users", params(("name" = String, Path, description = "User name")),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn get(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<UserView>> {
    Ok(axum::Json(state.tenants.user(&auth.caller, &name).await?))
}

/// Disable a user (admin): their tunnels drop at once, their sessions end.
#[utoipa::path(post, path = "/api/v1/users/{name}/disable", tag = "users", params(("name" = String, Path, description = "User name")),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn disable(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<UserView>> {
    Ok(axum::Json(
        state
            .tenants
            .set_disabled(&auth.caller, &name, true)
            .await?,
    ))
}

/// Re-enable a user (admin).
#[utoipa::path(post, path = "/api/v1/users/{name}/enable", tag = "users", params(("name" = String, Path, description = "User name")),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn enable(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<UserView>> {
    Ok(axum::Json(
        state
            .tenants
            .set_disabled(&auth.caller, &name, false)
            .await?,
    ))
}

/// A user's quotas; absent or null fields fall back to the broker's defaults.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct QuotaRequest {
    /// Names the user may hold reserved.
    #[schema(minimum = 0, maximum = 1000000)]
    max_reservations: Option<i64>,
    /// Live tunnels at once.
    #[schema(minimum = 0, maximum = 1000000)]
    max_tunnels: Option<i64>,
    /// Concurrent visitor connections per tunnel.
    #[schema(minimum = 0, maximum = 1000000)]
    max_visitor_connections: Option<i64>,
    /// Bytes per second each way per tunnel, shared by its visitors; 0 for no limit.
    #[schema(minimum = 0, maximum = 1000000000000_i64)]
    max_tunnel_bytes_per_sec: Option<i64>,
}

/// Set a user's quotas (admin).
#[utoipa::path(put, path = "/api/v1/users/{name}/quotas", tag = "users", params(("name" = String, Path, description = "User name")),
    request_body = QuotaRequest,
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn set_quotas(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(q): ApiJson<QuotaRequest>,
) -> ApiResult<axum::Json<UserView>> {
    let quotas = Quotas {
        max_reservations: q.max_reservations,
        max_tunnels: q.max_tunnels,
        max_visitor_connections: q.max_visitor_connections,
        max_tunnel_bytes_per_sec: q.max_tunnel_bytes_per_sec,
    };
    Ok(axum::Json(
        state
            .tenants
            .set_quotas(&auth.caller, &name, quotas)
            .await?,
    ))
}

/// A password set by an admin.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewPassword {
    /// At least 10 characters.
    #[schema(min_length = 10, max_length = 1024)]
    password: String,
}

/// Reset a user's password (admin; or oneself); their console sessions end.
#[utoipa::path(put, path = "/api/v1/users/{name}/password", tag = "users", params(("name" = String, Path, description = "User name")),
    request_body = NewPassword,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn reset_password(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<NewPassword>,
) -> ApiResult<StatusCode> {
    auth.caller.require(Scope::Write)?;
    if name == auth.caller.user.name {
        return Err(ServiceError::invalid(
            "name",
            "change your own password at /api/v1/me/password",
        )
        .into());
    }
    state
        .tenants
        .set_password(&auth.caller, &name, &req.password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

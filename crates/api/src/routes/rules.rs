//! Access rules of a reservation (basic-auth users, htpasswd import, IP lists) and its share
//! links. Every change answers with the rules as they now stand, so a client re-renders from
//! the answer; the edge applies them to live tunnels within a second.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use warren_tenants::parse_duration;
use warren_tenants::rules::{self, RulesView};
use warren_tenants::shares::{self, CreatedShare, ShareView};

use super::{ApiJson, ApiPath, ApiQuery};
use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// The rules of a reservation, with its share links.
#[utoipa::path(get, path = "/api/v1/reservations/{name}/rules", tag = "rules", params(("name" = String, Path, description = "The reserved name")),
    responses((status = 200, body = RulesView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn show(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<RulesView>> {
    Ok(axum::Json(
        rules::show(&state.tenants, &auth.caller, &name).await?,
    ))
}

/// How many rules went.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Cleared {
    /// Basic-auth users and IP entries removed.
    removed: u64,
}

/// Remove every basic-auth user and IP entry: anyone may visit again. Share links stay until
/// revoked.
#[utoipa::path(delete, path = "/api/v1/reservations/{name}/rules", tag = "rules", params(("name" = String, Path, description = "The reserved name")),
    responses((status = 200, body = Cleared), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn clear(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<Cleared>> {
    let removed = rules::clear(&state.tenants, &auth.caller, &name).await?;
    Ok(axum::Json(Cleared { removed }))
}

/// A basic-auth user's password.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct BasicPassword {
    /// What the visitor types.
    #[schema(min_length = 1, max_length = 1024)]
    password: String,
}

/// Add a basic-auth user, or set a new password for one (HTTP names only).
#[utoipa::path(put, path = "/api/v1/reservations/{name}/rules/auth/{user}", tag = "rules", request_body = BasicPassword,
    params(("name" = String, Path, description = "The reserved name"), ("user" = String, Path, description = "The user name visitors type")),
    responses((status = 200, body = RulesView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn auth_put(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath((name, user)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<BasicPassword>,
) -> ApiResult<axum::Json<RulesView>> {
    rules::auth_add(&state.tenants, &auth.caller, &name, &user, &req.password).await?;
    Ok(axum::Json(
        rules::show(&state.tenants, &auth.caller, &name).await?,
    ))
}

/// Remove a basic-auth user.
#[utoipa::path(delete, path = "/api/v1/reservations/{name}/rules/auth/{user}", tag = "rules",
    params(("name" = String, Path, description = "The reserved name"), ("user" = String, Path, description = "The user name")),
    responses((status = 200, body = RulesView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn auth_remove(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath((name, user)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<RulesView>> {
    rules::auth_rm(&state.tenants, &auth.caller, &name, &user).await?;
    Ok(axum::Json(
        rules::show(&state.tenants, &auth.caller, &name).await?,
    ))
}

/// An htpasswd file's text.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Htpasswd {
    /// `user:hash` lines: bcrypt (`htpasswd -B`) or argon2; MD5, SHA-1 and crypt lines are
    /// refused with their line number.
    #[schema(max_length = 1048576)]
    htpasswd: String,
}

/// Import an htpasswd file's users, all or none; users already there get the file's hash.
#[utoipa::path(post, path = "/api/v1/reservations/{name}/rules/htpasswd", tag = "rules", request_body = Htpasswd,
    params(("name" = String, Path, description = "The reserved name")),
    responses((status = 200, body = RulesView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn import(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<Htpasswd>,
) -> ApiResult<axum::Json<RulesView>> {
    rules::auth_import(&state.tenants, &auth.caller, &name, &req.htpasswd).await?;
    Ok(axum::Json(
        rules::show(&state.tenants, &auth.caller, &name).await?,
    ))
}

/// An IP list entry.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct IpEntry {
    /// `allow` (once any is allowed, only allowed networks may visit) or `deny`.
    #[schema(pattern = "^(allow|deny)$")]
    action: String,
    /// A network (`203.0.113.0/24`, `2001:db8::/32`) or one address.
    #[schema(min_length = 1, max_length = 64)]
    cidr: String,
}

/// Allow or deny a network; the most specific entry covering a visitor's address decides.
#[utoipa::path(post, path = "/api/v1/reservations/{name}/rules/ip", tag = "rules", request_body = IpEntry,
    params(("name" = String, Path, description = "The reserved name")),
    responses((status = 200, body = RulesView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn ip_add(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<IpEntry>,
) -> ApiResult<axum::Json<RulesView>> {
    let (t, c) = (&state.tenants, &auth.caller);
    match req.action.as_str() {
        "allow" => rules::allow(t, c, &name, &req.cidr).await?,
        "deny" => rules::deny(t, c, &name, &req.cidr).await?,
        _ => {
            return Err(
                warren_tenants::ServiceError::invalid("action", "use allow or deny").into(),
            );
        }
    };
    Ok(axum::Json(rules::show(t, c, &name).await?))
}

/// `?cidr=…`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CidrQuery {
    /// The network, as allowed or denied.
    cidr: String,
}

/// Remove a network's allow or deny entry.
#[utoipa::path(delete, path = "/api/v1/reservations/{name}/rules/ip", tag = "rules",
    params(("name" = String, Path, description = "The reserved name"), CidrQuery),
    responses((status = 200, body = RulesView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn ip_remove(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<CidrQuery>,
) -> ApiResult<axum::Json<RulesView>> {
    rules::unlist(&state.tenants, &auth.caller, &name, &q.cidr).await?;
    Ok(axum::Json(
        rules::show(&state.tenants, &auth.caller, &name).await?,
    ))
}

/// The share links of a reservation, oldest first (never their tokens).
#[utoipa::path(get, path = "/api/v1/reservations/{name}/shares", tag = "rules", params(("name" = String, Path, description = "The reserved name")),
    responses((status = 200, body = Vec<ShareView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn shares_list(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<Vec<ShareView>>> {
    Ok(axum::Json(
        shares::list(&state.tenants, &auth.caller, &name).await?,
    ))
}

/// A share link to make.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewShare {
    /// How long it works: `30m`, `2h`, `7d` (1 minute to 90 days).
    #[schema(pattern = "^[1-9][0-9]{0,5}[smhdw]$")]
    expires: String,
    /// How many times it can be opened; none for unlimited until it expires.
    #[schema(minimum = 1)]
    uses: Option<i64>,
}

/// Make a share link: it lets its holder past the name's basic auth. The answer holds the
/// link, shown this once.
#[utoipa::path(post, path = "/api/v1/reservations/{name}/shares", tag = "rules", request_body = NewShare,
    params(("name" = String, Path, description = "The reserved name")),
    responses((status = 201, body = CreatedShare), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn share_create(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<NewShare>,
) -> ApiResult<(StatusCode, axum::Json<CreatedShare>)> {
    let expires = parse_duration(&req.expires)?;
    let made = shares::create(&state.tenants, &auth.caller, &name, expires, req.uses).await?;
    Ok((StatusCode::CREATED, axum::Json(made)))
}

/// Revoke a share link: it and every cookie it gave stop working within a second.
#[utoipa::path(delete, path = "/api/v1/reservations/{name}/shares/{id}", tag = "rules",
    params(("name" = String, Path, description = "The reserved name"), ("id" = i64, Path, description = "The link's id")),
    responses((status = 200, body = ShareView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn share_revoke(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath((name, id)): ApiPath<(String, i64)>,
) -> ApiResult<axum::Json<ShareView>> {
    Ok(axum::Json(
        shares::revoke(&state.tenants, &auth.caller, &name, id).await?,
    ))
}

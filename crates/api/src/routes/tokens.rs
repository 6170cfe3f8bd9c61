//! API tokens.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use warren_tenants::{CreatedToken, Scope, TokenView, parse_duration};

use super::{ApiJson, ApiPath, ApiQuery, UserFilter};
use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// Tokens of the caller (or of `user`, admin); never their secrets.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(UserFilter),
    responses((status = 200, body = Vec<TokenView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    auth: Auth,
    ApiQuery(f): ApiQuery<UserFilter>,
) -> ApiResult<axum::Json<Vec<TokenView>>> {
    Ok(axum::Json(
        state
            .tenants
            .tokens(&auth.caller, f.user.as_deref())
            .await?,
    ))
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewTokenRequest {
    /// Unique per user: "ci", "laptop".
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    /// `read`, `write` (default) or `admin`; at most the caller's own.
    #[schema(pattern = "^(read|write|admin)$")]
    scope: Option<String>,
    /// Lifetime: `30d`, `12h`, `2w`; none for a token that does not expire.
    #[schema(pattern = "^[1-9][0-9]{0,5}[smhdw]$")]
    expires: Option<String>,
    /// For whom (admin); default: the caller.
    user: Option<String>,
}

/// Create a token: the answer holds its secret, shown this once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn create(
    State(state): State<ApiState>,
    auth: Auth,
    ApiJson(req): ApiJson<NewTokenRequest>,
) -> ApiResult<(StatusCode, axum::Json<CreatedToken>)> {
    let scope: Scope = req.scope.as_deref().unwrap_or("write").parse()?;
    let lifetime = req.expires.as_deref().map(parse_duration).transpose()?;
    let t = state
        .tenants
        .create_token(
            &auth.caller,
            req.user.as_deref(),
            &req.name,
            scope,
            lifetime,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(t)))
}

/// Revoke a token; it stops working on the next request.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = i64, Path, description = "The token's id")),
    responses((status = 200, body = TokenView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn revoke(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<axum::Json<TokenView>> {
    Ok(axum::Json(
        state.tenants.revoke_token(&auth.caller, id).await?,
    ))
}

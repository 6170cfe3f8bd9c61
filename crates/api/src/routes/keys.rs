//! SSH public keys.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use warren_tenants::{KeyView, ServiceError};

use super::{ApiJson, ApiPath, ApiQuery, UserFilter};
use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// Keys of the caller (or of `user`, admin).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(UserFilter),
    responses((status = 200, body = Vec<KeyView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    auth: Auth,
    ApiQuery(f): ApiQuery<UserFilter>,
) -> ApiResult<axum::Json<Vec<KeyView>>> {
    Ok(axum::Json(
        state.tenants.keys(&auth.caller, f.user.as_deref()).await?,
    ))
}

/// A key to add.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewKeyRequest {
    /// One OpenSSH public key line: `ssh-ed25519 AAAA… comment`.
    public_key: String,
    /// For whom (admin); default: the caller.
    user: Option<String>,
}

/// Add an SSH public key.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = NewKeyRequest,
    responses((status = 201, body = KeyView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn add(
    State(state): State<ApiState>,
    auth: Auth,
    ApiJson(req): ApiJson<NewKeyRequest>,
) -> ApiResult<(StatusCode, axum::Json<KeyView>)> {
    if req.public_key.len() > 16 * 1024 {
        return Err(ServiceError::invalid("public_key", "too long for a public key").into());
    }
    let key = warren_ssh::parse_public_key(&req.public_key)
        .map_err(|e| ServiceError::invalid("public_key", e.to_string()))?;
    let k = state
        .tenants
        .add_key(&auth.caller, req.user.as_deref(), key)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(k)))
}

/// Remove a key by fingerprint (`SHA256:…`, URL-encoded); sessions using it are dropped.
#[utoipa::path(delete, path = "/api/v1/keys/{fingerprint}", tag = "keys", params(("fingerprint" = String, Path, description = "SHA256:… as ssh-keygen -l prints it")),
    responses((status = 200, body = KeyView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn remove(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(fp): ApiPath<String>,
) -> ApiResult<axum::Json<KeyView>> {
    Ok(axum::Json(
        state.tenants.remove_key(&auth.caller, &fp).await?,
    ))
}

//! Device pairing: the console's `/pair/CODE` page looks a waiting SSH key up and approves or
//! rejects it. Any signed-in user with the write scope may decide (the code, shown only in the
//! key holder's terminal, is the secret); an approved key joins the caller.

use axum::extract::State;
use axum::http::StatusCode;
use warren_tenants::{KeyView, PairingView};

use super::ApiPath;
use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// A waiting key: its fingerprint and the forwards its session asked for.
#[utoipa::path(get, path = "/api/v1/pairings/{code}", tag = "keys",
    params(("code" = String, Path, description = "The code the SSH session printed (XXXX-XXXX)")),
    responses((status = 200, body = PairingView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn get(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<axum::Json<PairingView>> {
    Ok(axum::Json(state.tenants.pairing(&auth.caller, &code)?))
}

/// Approve: the key is registered to the caller and its waiting forwards come up. Works once.
#[utoipa::path(post, path = "/api/v1/pairings/{code}/approve", tag = "keys",
    params(("code" = String, Path, description = "The code the SSH session printed (XXXX-XXXX)")),
    responses((status = 200, body = KeyView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn approve(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<axum::Json<KeyView>> {
    Ok(axum::Json(
        state.tenants.approve_pairing(&auth.caller, &code).await?,
    ))
}

/// Reject: the key stays unknown and its session is told who said no. Works once.
#[utoipa::path(post, path = "/api/v1/pairings/{code}/reject", tag = "keys",
    params(("code" = String, Path, description = "The code the SSH session printed (XXXX-XXXX)")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn reject(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.tenants.reject_pairing(&auth.caller, &code).await?;
    Ok(StatusCode::NO_CONTENT)
}

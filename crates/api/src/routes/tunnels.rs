//! Live tunnels.

use axum::extract::State;
use axum::http::StatusCode;
use warren_tenants::TunnelView;

use super::{AllFilter, ApiPath, ApiQuery};
use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// The caller's live tunnels (everyone's with `all`, admin).
#[utoipa::path(get, path = "/api/v1/tunnels", tag = "tunnels", params(AllFilter),
    responses((status = 200, body = Vec<TunnelView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    auth: Auth,
    ApiQuery(f): ApiQuery<AllFilter>,
) -> ApiResult<axum::Json<Vec<TunnelView>>> {
    Ok(axum::Json(
        state.tenants.tunnels(&auth.caller, f.all).await?,
    ))
}

/// Disconnect a live tunnel; its owner's session is told who did it.
#[utoipa::path(delete, path = "/api/v1/tunnels/{name}", tag = "tunnels", params(("name" = String, Path, description = "The tunnel's name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn disconnect(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.tenants.disconnect(&auth.caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

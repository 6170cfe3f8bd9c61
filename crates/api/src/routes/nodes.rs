//! The brokers sharing this database (admin).

use axum::extract::State;
use warren_tenants::NodeView;

use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// Every broker node on this database, alive or dead, with its addresses, when it started,
/// its last heartbeat and the tunnels it held then (admin).
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes",
    responses((status = 200, body = Vec<NodeView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    auth: Auth,
) -> ApiResult<axum::Json<Vec<NodeView>>> {
    Ok(axum::Json(state.tenants.nodes(&auth.caller).await?))
}

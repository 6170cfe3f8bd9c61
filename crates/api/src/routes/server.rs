//! Facts about this broker that clients need to write commands: where owners point ssh.

use axum::extract::State;
use warren_tenants::{Scope, SshEndpoint};

use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// Where owners connect with ssh (host, port, login name), as the console's Connect page and
/// generated snippets write it.
#[utoipa::path(get, path = "/api/v1/server", tag = "session",
    responses((status = 200, body = SshEndpoint), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn info(
    State(state): State<ApiState>,
    auth: Auth,
) -> ApiResult<axum::Json<SshEndpoint>> {
    auth.caller.require(Scope::Read)?;
    Ok(axum::Json(state.tenants.settings.ssh.clone()))
}

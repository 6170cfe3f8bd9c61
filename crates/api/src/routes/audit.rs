//! The audit log, certificates and the DNS state of names.

use axum::extract::State;
use serde::Deserialize;
use warren_tenants::{CertView, DnsView, EventView, Page};

use super::{AllFilter, ApiQuery};
use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// Paging through the audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventQuery {
    /// Everyone's events (admin).
    #[serde(default)]
    all: bool,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1-500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// Audit events, newest first: the caller's own (everyone's with `all`, admin).
#[utoipa::path(get, path = "/api/v1/events", tag = "audit", params(EventQuery),
    responses((status = 200, body = Page<EventView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn events(
    State(state): State<ApiState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<axum::Json<Page<EventView>>> {
    Ok(axum::Json(
        state
            .tenants
            .events(&auth.caller, q.all, q.cursor.as_deref(), q.limit)
            .await?,
    ))
}

/// Certificates of the caller's names (everyone's with `all`, admin).
#[utoipa::path(get, path = "/api/v1/certificates", tag = "audit", params(AllFilter),
    responses((status = 200, body = Vec<CertView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn certificates(
    State(state): State<ApiState>,
    auth: Auth,
    ApiQuery(f): ApiQuery<AllFilter>,
) -> ApiResult<axum::Json<Vec<CertView>>> {
    Ok(axum::Json(
        state.tenants.certificates(&auth.caller, f.all).await?,
    ))
}

/// Where the DNS records of the caller's names stand (everyone's with `all`, admin): their
/// reservations and the random names of their live tunnels, with the provider's last error
/// while a change keeps failing.
#[utoipa::path(get, path = "/api/v1/dns", tag = "audit", params(AllFilter),
    responses((status = 200, body = Vec<DnsView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn dns(
    State(state): State<ApiState>,
    auth: Auth,
    ApiQuery(f): ApiQuery<AllFilter>,
) -> ApiResult<axum::Json<Vec<DnsView>>> {
    Ok(axum::Json(state.tenants.dns(&auth.caller, f.all).await?))
}

//! Reserved names.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use warren_tenants::ReservationView;

use super::{AllFilter, ApiJson, ApiPath, ApiQuery};
use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// The caller's reservations (everyone's with `all`, admin).
#[utoipa::path(get, path = "/api/v1/reservations", tag = "reservations", params(AllFilter),
    responses((status = 200, body = Vec<ReservationView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    auth: Auth,
    ApiQuery(f): ApiQuery<AllFilter>,
) -> ApiResult<axum::Json<Vec<ReservationView>>> {
    let who = if f.all { Some("*") } else { None };
    if f.all {
        auth.caller.require(warren_tenants::Scope::Admin)?;
    }
    Ok(axum::Json(
        state.tenants.reservations(&auth.caller, who).await?,
    ))
}

/// A name to reserve.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewReservation {
    /// A DNS label (`chat`), or for `tcp` a port of the broker's TCP range.
    #[schema(min_length = 1, max_length = 63)]
    name: String,
    /// `http` (default), `tls` (passthrough) or `tcp`.
    #[schema(pattern = "^(http|tls|tcp)$")]
    kind: Option<String>,
    /// For whom (admin); default: the caller.
    user: Option<String>,
}

/// Reserve a name (within the `max_reservations` quota).
#[utoipa::path(post, path = "/api/v1/reservations", tag = "reservations", request_body = NewReservation,
    responses((status = 201, body = ReservationView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn create(
    State(state): State<ApiState>,
    auth: Auth,
    ApiJson(req): ApiJson<NewReservation>,
) -> ApiResult<(StatusCode, axum::Json<ReservationView>)> {
    let kind = req.kind.as_deref().unwrap_or("http");
    let r = state
        .tenants
        .reserve(&auth.caller, req.user.as_deref(), &req.name, kind)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(r)))
}

/// One reservation.
#[utoipa::path(get, path = "/api/v1/reservations/{name}", tag = "reservations", params(("name" = String, Path, description = "The name")),
    responses((status = 200, body = ReservationView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn get(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<ReservationView>> {
    Ok(axum::Json(
        state.tenants.reservation(&auth.caller, &name).await?,
    ))
}

/// Release a reservation.
#[utoipa::path(delete, path = "/api/v1/reservations/{name}", tag = "reservations", params(("name" = String, Path, description = "The name")),
    responses((status = 200, body = ReservationView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn release(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<ReservationView>> {
    Ok(axum::Json(
        state.tenants.release(&auth.caller, &name).await?,
    ))
}

//! Custom domains: attach a host name to a reservation, see the records that prove it, check
//! it now, detach it.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use warren_tenants::DomainView;

use super::{AllFilter, ApiJson, ApiPath, ApiQuery};
use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// The caller's custom domains on all their names (everyone's with `all`, admin).
#[utoipa::path(get, path = "/api/v1/domains", tag = "domains", params(AllFilter),
    responses((status = 200, body = Vec<DomainView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn list_all(
    State(state): State<ApiState>,
    auth: Auth,
    ApiQuery(f): ApiQuery<AllFilter>,
) -> ApiResult<axum::Json<Vec<DomainView>>> {
    Ok(axum::Json(
        state.tenants.domains(&auth.caller, None, f.all).await?,
    ))
}

/// The custom domains of one reservation.
#[utoipa::path(get, path = "/api/v1/reservations/{name}/domains", tag = "domains",
    params(("name" = String, Path, description = "The reserved name")),
    responses((status = 200, body = Vec<DomainView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<Vec<DomainView>>> {
    Ok(axum::Json(
        state
            .tenants
            .domains(&auth.caller, Some(&name), false)
            .await?,
    ))
}

/// A host name to attach.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewDomain {
    /// The host name (`app.their-domain.org`): not under the broker's own domain.
    #[schema(min_length = 1, max_length = 253)]
    domain: String,
}

/// Attach a custom domain: the answer lists the CNAME and TXT records that prove it; it is
/// served once the broker sees them.
#[utoipa::path(post, path = "/api/v1/reservations/{name}/domains", tag = "domains", request_body = NewDomain,
    params(("name" = String, Path, description = "The reserved name")),
    responses((status = 201, body = DomainView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn attach(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<NewDomain>,
) -> ApiResult<(StatusCode, axum::Json<DomainView>)> {
    let d = state
        .tenants
        .attach_domain(&auth.caller, &name, &req.domain)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(d)))
}

/// One custom domain of a reservation.
#[utoipa::path(get, path = "/api/v1/reservations/{name}/domains/{domain}", tag = "domains",
    params(("name" = String, Path, description = "The reserved name"), ("domain" = String, Path, description = "The host name")),
    responses((status = 200, body = DomainView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn get(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath((name, domain)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<DomainView>> {
    Ok(axum::Json(
        state.tenants.domain(&auth.caller, &name, &domain).await?,
    ))
}

/// Detach a custom domain: it stops being served at once.
#[utoipa::path(delete, path = "/api/v1/reservations/{name}/domains/{domain}", tag = "domains",
    params(("name" = String, Path, description = "The reserved name"), ("domain" = String, Path, description = "The host name")),
    responses((status = 200, body = DomainView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn detach(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath((name, domain)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<DomainView>> {
    Ok(axum::Json(
        state
            .tenants
            .detach_domain(&auth.caller, Some(&name), &domain)
            .await?,
    ))
}

/// Check a custom domain's records now (instead of at its next scheduled check).
#[utoipa::path(post, path = "/api/v1/reservations/{name}/domains/{domain}/verify", tag = "domains",
    params(("name" = String, Path, description = "The reserved name"), ("domain" = String, Path, description = "The host name")),
    responses((status = 200, body = DomainView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn verify(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath((name, domain)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<DomainView>> {
    Ok(axum::Json(
        state
            .tenants
            .verify_domain(&auth.caller, Some(&name), &domain)
            .await?,
    ))
}

//! Webhooks: register a URL for one's tunnel alerts, list, delete, read the delivery log,
//! send a test ping.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use warren_tenants::{DeliveryView, WebhookView};

use super::{AllFilter, ApiJson, ApiPath, ApiQuery};
use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};

/// The caller's webhooks (every hook, global ones included, with `all`: admin). Secrets are
/// never listed.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", params(AllFilter),
    responses((status = 200, body = Vec<WebhookView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    auth: Auth,
    ApiQuery(f): ApiQuery<AllFilter>,
) -> ApiResult<axum::Json<Vec<WebhookView>>> {
    Ok(axum::Json(
        state.tenants.webhooks(&auth.caller, f.all).await?,
    ))
}

/// A webhook to register.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewWebhook {
    /// Where to POST events: http or https, on a public address.
    #[schema(min_length = 1, max_length = 2000)]
    url: String,
    /// For whom (admin); default: the caller.
    user: Option<String>,
    /// A global hook (admin): every tunnel's events, and certificate and DNS alerts.
    #[serde(default)]
    global: bool,
}

/// Register a webhook: the answer holds its signing secret, shown this once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses((status = 201, body = WebhookView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn create(
    State(state): State<ApiState>,
    auth: Auth,
    ApiJson(req): ApiJson<NewWebhook>,
) -> ApiResult<(StatusCode, axum::Json<WebhookView>)> {
    let hook = state
        .tenants
        .create_webhook(&auth.caller, &req.url, req.user.as_deref(), req.global)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(hook)))
}

/// Delete a webhook: nothing more is sent to it, pending deliveries included.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = i64, Path, description = "The webhook's id")),
    responses((status = 200, body = WebhookView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<axum::Json<WebhookView>> {
    Ok(axum::Json(
        state.tenants.delete_webhook(&auth.caller, id).await?,
    ))
}

/// `?limit=N`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Limit {
    /// How many of the newest deliveries (1 to 200, default 50).
    limit: Option<i64>,
}

/// A webhook's delivery log, newest first: each event, its attempts, the receiver's last
/// status and error.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = i64, Path, description = "The webhook's id"), Limit),
    responses((status = 200, body = Vec<DeliveryView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn deliveries(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<Limit>,
) -> ApiResult<axum::Json<Vec<DeliveryView>>> {
    Ok(axum::Json(
        state
            .tenants
            .webhook_deliveries(&auth.caller, id, q.limit)
            .await?,
    ))
}

/// Send a test `ping` to a webhook: the answer is the queued delivery; its outcome shows in
/// the delivery log within seconds.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = i64, Path, description = "The webhook's id")),
    responses((status = 202, body = DeliveryView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn test(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<(StatusCode, axum::Json<DeliveryView>)> {
    let d = state.tenants.ping_webhook(&auth.caller, id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(d)))
}

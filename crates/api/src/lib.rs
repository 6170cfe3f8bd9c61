//! Warren's REST API, `/api/v1`: what the console (and any HTTP client) uses to manage users,
//! keys, tokens, reservations and live tunnels.
//!
//! Handlers are thin: they authenticate ([`auth::Auth`]), parse, call one function of
//! `warren-tenants` (the same ones the SSH commands and the CLI call) and render. Every error
//! has one shape ([`error::ErrorBody`]). The OpenAPI 3.1 document is generated from the
//! handlers' annotations by utoipa and served at `/api/v1/openapi.json`; utoipa-axum registers
//! each route and documents it in the same call, so the two cannot drift.
#![warn(missing_docs)]

pub mod auth;
pub mod error;
mod local;
mod routes;
pub mod streams;

pub use local::LocalEndpoint;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use warren_tenants::Tenants;

use crate::auth::{LoginLimiter, Sessions};
use crate::error::ApiError;

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Mark the session cookie `Secure` (the console is served over HTTPS).
    pub secure_cookies: bool,
}

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The service functions.
    pub tenants: Tenants,
    /// Session keys and checks.
    pub sessions: Arc<Sessions>,
    /// Login attempt limits.
    pub limiter: Arc<LoginLimiter>,
    /// Settings.
    pub settings: Arc<ApiSettings>,
    /// Live (SSE) streams open per user.
    pub streams: Arc<streams::Streams>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// State over `tenants`; loads (or on first start creates) the session signing key.
    pub async fn new(
        tenants: Tenants,
        settings: ApiSettings,
    ) -> Result<Self, warren_store::StoreError> {
        let sessions = Sessions::load(tenants.store.as_ref()).await?;
        Ok(Self {
            tenants,
            sessions: Arc::new(sessions),
            limiter: Arc::new(LoginLimiter::default()),
            settings: Arc::new(settings),
            streams: Arc::new(streams::Streams::default()),
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Warren API",
        description = "Manage users, SSH keys, API tokens, reserved names and live tunnels of a Warren broker. \
                       Authenticate with `Authorization: Bearer wrn_…` (an API token) or the console's session \
                       cookie plus `X-CSRF-Token` on requests that change state.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    tags(
        (name = "session", description = "Sign in and out"),
        (name = "users", description = "Accounts (admin) and oneself"),
        (name = "keys", description = "SSH public keys"),
        (name = "tokens", description = "API tokens"),
        (name = "reservations", description = "Reserved names"),
        (name = "rules", description = "Who may visit a reserved name: basic auth, IP lists, share links"),
        (name = "tunnels", description = "Live tunnels"),
        (name = "audit", description = "Audit log, certificates and DNS state"),
        (name = "domains", description = "Custom domains"),
        (name = "webhooks", description = "Tunnel alerts: webhooks and their delivery logs"),
        (name = "nodes", description = "The brokers sharing this database (admin)")
    )
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("wrn_…")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::COOKIE))),
        );
    }
}

/// The routes and their OpenAPI document.
fn parts() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    routes::all(OpenApiRouter::with_openapi(ApiDoc::openapi())).split_for_parts()
}

/// The OpenAPI document (also served at `/api/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The API's router: `/api/v1/…`, with JSON 404/405 for anything else under it.
pub fn router(state: ApiState) -> Router {
    let (routes, doc) = parts();
    let doc = Arc::new(doc.to_pretty_json().unwrap_or_default());
    routes
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        doc.to_string(),
                    )
                }
            }),
        )
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::map_response(no_store))
        .with_state(state)
}

/// API answers are per user: never cached by a browser or a proxy.
async fn no_store(mut resp: axum::response::Response) -> axum::response::Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

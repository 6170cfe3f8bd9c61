//! The handlers, one file per resource, and the extractors that turn axum's rejections into
//! the API's error shape.

mod audit;
mod domains;
mod keys;
mod nodes;
mod pairings;
mod reservations;
mod rules;
mod server;
mod session;
mod tokens;
mod tunnels;
mod users;
mod webhooks;

use axum::extract::{FromRequest, FromRequestParts};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;
use crate::error::ApiError;

/// A JSON body; a malformed one is a 422 in the API's shape, a wrong content type a 415.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(pub T);

/// Query parameters; malformed ones are a 422 in the API's shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct ApiQuery<T>(pub T);

/// Path parameters; malformed ones are a 422 in the API's shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct ApiPath<T>(pub T);

/// Every route.
pub(crate) fn all(r: OpenApiRouter<ApiState>) -> OpenApiRouter<ApiState> {
    r.routes(routes!(session::login, session::current, session::logout))
        .routes(routes!(session::logout_all))
        .routes(routes!(session::setup))
        .routes(routes!(users::me))
        .routes(routes!(users::change_own_password))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get))
        .routes(routes!(users::disable))
        .routes(routes!(users::enable))
        .routes(routes!(users::set_quotas))
        .routes(routes!(users::reset_password))
        .routes(routes!(keys::list, keys::add))
        .routes(routes!(keys::remove))
        .routes(routes!(pairings::get))
        .routes(routes!(pairings::approve))
        .routes(routes!(pairings::reject))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(reservations::list, reservations::create))
        .routes(routes!(reservations::get, reservations::release))
        .routes(routes!(rules::show, rules::clear))
        .routes(routes!(rules::auth_put, rules::auth_remove))
        .routes(routes!(rules::import))
        .routes(routes!(rules::ip_add, rules::ip_remove))
        .routes(routes!(rules::shares_list, rules::share_create))
        .routes(routes!(rules::share_revoke))
        .routes(routes!(tunnels::list))
        .routes(routes!(tunnels::list_live))
        .routes(routes!(server::info))
        .routes(routes!(tunnels::disconnect))
        .routes(routes!(tunnels::requests))
        .routes(routes!(tunnels::live))
        .routes(routes!(audit::events))
        .routes(routes!(audit::certificates))
        .routes(routes!(audit::dns))
        .routes(routes!(domains::list_all))
        .routes(routes!(domains::list, domains::attach))
        .routes(routes!(domains::get, domains::detach))
        .routes(routes!(domains::verify))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::test))
        .routes(routes!(nodes::list))
}

/// `?user=NAME` (admins; `*` for everyone).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UserFilter {
    /// Whose (admins may name anyone, or `*` for everyone); default: the caller.
    pub user: Option<String>,
}

/// `?all=true` (admins).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AllFilter {
    /// Everyone's, not only the caller's (admin).
    #[serde(default)]
    pub all: bool,
}

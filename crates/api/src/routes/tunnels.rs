//! Live tunnels.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use warren_registry::Followed;
use warren_tenants::{RequestView, TunnelView};

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

/// How often the live list is looked at; a change is sent at most this often.
const LIVE_TICK: Duration = Duration::from_secs(1);
/// A live stream ends after this long and the browser's `EventSource` reconnects, so a session
/// that ended (sign-out, disable) stops receiving within this bound even though the stream
/// itself is not re-authenticated on every tick.
const LIVE_STREAM_LIFETIME: Duration = Duration::from_secs(300);

/// The caller's live tunnels (everyone's with `all`, admin) as Server-Sent Events: an
/// `event: tunnels` with the whole list (JSON, as `GET /api/v1/tunnels` answers) at once,
/// then again each time it changes (counters included), at most once a second. The stream
/// ends after five minutes; clients reconnect (EventSource does so by itself). Not under
/// `/tunnels/`: a tunnel may be named `live`.
#[utoipa::path(get, path = "/api/v1/live/tunnels", tag = "tunnels", params(AllFilter),
    responses((status = 200, description = "text/event-stream of tunnel lists", content_type = "text/event-stream", body = String),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, description = "the user has 16 live streams open already", body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn list_live(
    State(state): State<ApiState>,
    auth: Auth,
    ApiQuery(f): ApiQuery<AllFilter>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // Refused now (scope, live tunnels unknown to this process), not as a broken stream.
    let all = f.all;
    let first = state.tenants.tunnels(&auth.caller, all).await?;
    let slot = state.streams.open(auth.caller.user.id)?;
    let end = tokio::time::Instant::now() + LIVE_STREAM_LIFETIME;
    // Paced, never catching up: a slow reader does not cause a burst of list builds.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + LIVE_TICK, LIVE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = (Some(first), String::new(), tick, slot);
    let stream = futures::stream::unfold(start, move |(mut pending, mut last, mut tick, slot)| {
        let state = state.clone();
        let caller = auth.caller.clone();
        async move {
            loop {
                let list = match pending.take() {
                    Some(list) => list,
                    None => {
                        tick.tick().await;
                        if tokio::time::Instant::now() >= end {
                            return None;
                        }
                        state.tenants.tunnels(&caller, all).await.ok()?
                    }
                };
                let json = serde_json::to_string(&list).unwrap_or_default();
                if json != last {
                    let event = Event::default()
                        .event("tunnels")
                        .retry(LIVE_TICK)
                        .data(&json);
                    last = json;
                    return Some((Ok(event), (None, last, tick, slot)));
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Disconnect a live tunnel; its owner's session is told who did it. A tunnel held on another
/// node of a cluster is disconnected by that node: 204 once it let go, 409 if it has not within
/// 5 s (it acts on the order when it can).
#[utoipa::path(delete, path = "/api/v1/tunnels/{name}", tag = "tunnels", params(("name" = String, Path, description = "The tunnel's name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn disconnect(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.tenants.disconnect(&auth.caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many of the recent requests.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RequestQuery {
    /// At most this many, the newest (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The tunnel's recent requests, newest last (kept in memory by the edge, the last 1,000; for
/// a tunnel held on another node of a cluster, by that node, with every node's visitors).
#[utoipa::path(get, path = "/api/v1/tunnels/{name}/requests", tag = "tunnels",
    params(("name" = String, Path, description = "The tunnel's name"), RequestQuery),
    responses((status = 200, body = Vec<RequestView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, description = "the cluster node holding the tunnel did not answer", body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn requests(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<RequestQuery>,
) -> ApiResult<axum::Json<Vec<RequestView>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(warren_tenants::ServiceError::invalid("limit", "use 1 to 1000").into());
    }
    Ok(axum::Json(
        state.tenants.requests(&auth.caller, &name, limit).await?,
    ))
}

/// The tunnel's requests live, as Server-Sent Events (`event: request`, JSON data): the recent
/// ones first, then each as it completes. A client that falls behind gets an `event: lagged`
/// with how many it missed; the edge never waits for it. The stream ends after five minutes
/// (clients reconnect, and the recent ones come first again).
#[utoipa::path(get, path = "/api/v1/tunnels/{name}/requests/live", tag = "tunnels",
    params(("name" = String, Path, description = "The tunnel's name")),
    responses((status = 200, description = "text/event-stream of requests", content_type = "text/event-stream", body = String),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 429, description = "the user has 16 live streams open already", body = ErrorBody),
              (status = 503, description = "the cluster node holding the tunnel did not answer", body = ErrorBody)),
    security(("token" = []), ("session" = [])))]
pub(crate) async fn live(
    State(state): State<ApiState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // The place first: a user at the limit costs the holding node no reading.
    let slot = state.streams.open(auth.caller.user.id)?;
    let mut feed = state
        .tenants
        .request_feed(&auth.caller, &name, true)
        .await?;
    let event = |e: &warren_registry::RequestEntry| {
        Event::default()
            .event("request")
            .json_data(RequestView::from(e))
            .unwrap_or_else(|_| Event::default().comment("unencodable"))
    };
    let first: Vec<Result<Event, Infallible>> = std::mem::take(&mut feed.recent)
        .iter()
        .map(|e| Ok(event(e)))
        .collect();
    // The slot rides with the feed: the place is given back when the stream goes.
    let live = futures::stream::unfold((feed, slot), move |(mut feed, slot)| async move {
        match feed.next().await? {
            Followed::Entry(e) => Some((Ok(event(&e)), (feed, slot))),
            Followed::Lagged(n) => Some((
                Ok(Event::default().event("lagged").data(n.to_string())),
                (feed, slot),
            )),
        }
    });
    // Bounded like the tunnel list: a revoked token or a signed-out session stops receiving
    // visitors' requests within five minutes, when the client must authenticate again.
    let stream = futures::StreamExt::take_until(
        futures::StreamExt::chain(futures::stream::iter(first), live),
        tokio::time::sleep(LIVE_STREAM_LIFETIME),
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

//! One visitor connection's requests, proxied into a tunnel.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;
use warren_registry::{Lookup, OpenError, Route, RouteKind};

use crate::Edge;
use crate::host::{HostError, Target, route_label};
use crate::pages::{Body, page, retry_page};

/// State of one visitor connection.
pub(crate) struct ConnState {
    edge: Arc<Edge>,
    peer: SocketAddr,
    proto: &'static str,
    /// The SNI of a TLS connection; requests for another tunnel get 421.
    sni_label: Option<String>,
    requests: AtomicU64,
    /// The tunnel connection slots this visitor connection holds, one per tunnel it used (the
    /// per-tunnel limit counts visitor connections). Never locked across an await.
    slots: Mutex<Vec<(Arc<Route>, Arc<OwnedSemaphorePermit>)>>,
    /// Upstream connections this visitor connection used last, reused by its next requests
    /// (HTTP/2 may have several in flight). Handed to the tunnel's pool when it closes.
    idle: Mutex<Vec<(Arc<Route>, SendRequest<Incoming>)>>,
}

impl Drop for ConnState {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for (route, sender) in idle {
            // A route only the pool still holds is gone: let its connections close.
            if Arc::strong_count(&route) > 1 {
                return_to_pool(&route, sender);
            }
        }
    }
}

impl ConnState {
    pub(crate) fn new(
        edge: Arc<Edge>,
        peer: SocketAddr,
        proto: &'static str,
        sni_label: Option<String>,
    ) -> Self {
        Self {
            edge,
            peer,
            proto,
            sni_label,
            requests: AtomicU64::new(0),
            slots: Mutex::new(Vec::new()),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Requests seen on this connection so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn take_own(&self, route: &Arc<Route>) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let i = idle.iter().position(|(r, _)| Arc::ptr_eq(r, route))?;
        Some(idle.swap_remove(i).1)
    }

    fn keep(&self, route: &Arc<Route>, sender: SendRequest<Incoming>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((route.clone(), sender));
        }
    }

    /// This visitor connection's slot on `route`, taken on first use.
    fn slot(&self, route: &Arc<Route>) -> Result<Arc<OwnedSemaphorePermit>, Failure> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Slots of routes that are gone (re-bound, unbound) are of no further use.
        slots.retain(|(r, _)| Arc::strong_count(r) > 1 || Arc::ptr_eq(r, route));
        if let Some((_, permit)) = slots.iter().find(|(r, _)| Arc::ptr_eq(r, route)) {
            return Ok(permit.clone());
        }
        let permit = Arc::new(
            route
                .connections
                .clone()
                .try_acquire_owned()
                .map_err(|_| Failure::Busy)?,
        );
        slots.push((route.clone(), permit.clone()));
        Ok(permit)
    }
}

/// Idle upstream connections kept per tunnel (and per visitor connection).
const MAX_IDLE: usize = 32;

/// How long an upstream connection waits in the tunnel's pool for a new visitor before it is
/// closed. Short, because an idle channel is not free for the owner: OpenSSH's client walks
/// every open channel (and polls its socket) on each turn of its loop, so a download behind
/// 32 idle pooled channels cost the client 2.45 CPU-s/GiB instead of 1.85, and ran at 415
/// MB/s instead of 549 (same broker, same run). Bursts (a page and its assets) reuse the pool
/// within this; a later visitor pays one channel open.
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// An upstream connection in a tunnel's pool, and since when it has waited there.
struct Pooled {
    sender: SendRequest<Incoming>,
    since: Instant,
}

/// An idle upstream from the tunnel's pool, if one is still usable.
async fn pooled(route: &Route) -> Option<SendRequest<Incoming>> {
    loop {
        let candidate = route.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        let Ok(pooled) = candidate.downcast::<Pooled>() else {
            continue;
        };
        let mut sender = pooled.sender;
        if sender.is_closed() {
            continue;
        }
        // Returned at the end of its last response, it is ready at once or very nearly.
        if let Ok(Ok(())) =
            tokio::time::timeout(std::time::Duration::from_millis(50), sender.ready()).await
        {
            return Some(sender);
        }
    }
}

fn return_to_pool(route: &Route, sender: SendRequest<Incoming>) {
    let mut idle = route.idle.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < MAX_IDLE && !sender.is_closed() {
        idle.push(Box::new(Pooled {
            sender,
            since: Instant::now(),
        }));
    }
}

/// Closes, every second, what has waited in a tunnel's pool longer than [`POOL_IDLE`] (one
/// task for all tunnels, on the main runtime; a lock per tunnel with a pool).
pub(crate) async fn expire_pooled(edge: Arc<Edge>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for route in edge.registry.routes() {
            route
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|p| {
                    p.downcast_ref::<Pooled>()
                        .is_some_and(|p| p.since.elapsed() < POOL_IDLE && !p.sender.is_closed())
                });
        }
    }
}

/// hyper's service function: route, proxy, answer. Never fails: every problem is a page.
pub(crate) async fn handle(
    state: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let tls = state.proto == "https";
    let mut resp = route(&state, req).await;
    if tls
        && let Some(max_age) = state.edge.settings.hsts_max_age
        && let Ok(v) = HeaderValue::from_str(&format!("max-age={max_age}"))
    {
        resp.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    Ok(resp)
}

async fn route(state: &Arc<ConnState>, req: Request<Incoming>) -> Response<Body> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let edge = &state.edge;
    let raw = match req.uri().authority() {
        // Absolute-form targets win over Host (RFC 9112 §3.2.2).
        Some(a) => a.as_str().as_bytes().to_vec(),
        None => req
            .headers()
            .get(header::HOST)
            .map(|h| h.as_bytes().to_vec())
            .unwrap_or_default(),
    };
    let (target, host) = match route_label(&raw, &edge.settings.domain) {
        Ok(x) => x,
        Err(HostError::Missing) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The request did not say which host it is for.",
            );
        }
        Err(HostError::Invalid) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The Host header is not a valid host name.",
            );
        }
    };
    // ACME HTTP-01 answers come first and are never redirected (RFC 8555 §8.3).
    if state.proto == "http"
        && let Some(token) = req
            .uri()
            .path()
            .strip_prefix("/.well-known/acme-challenge/")
    {
        return match edge.acme_http01.as_ref().and_then(|f| f(token)) {
            Some(key_auth) => {
                let mut resp = Response::new(crate::pages::full(key_auth));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                resp
            }
            None => page(
                StatusCode::NOT_FOUND,
                "Not found",
                "No such ACME challenge.",
            ),
        };
    }
    let label = match target {
        Target::Tunnel(label) => label,
        Target::Elsewhere(_) => return no_tunnel(&host),
    };
    if let Some(sni) = &state.sni_label
        && *sni != label
    {
        // A connection set up for one tunnel's name must not carry another's requests.
        return page(
            StatusCode::MISDIRECTED_REQUEST,
            "Misdirected request",
            &format!("This connection was opened for another host than {host}."),
        );
    }
    if state.proto == "http"
        && let Some(https_port) = edge.settings.redirect_https_port
    {
        return redirect_to_https(&host, https_port, req.uri());
    }
    match edge.registry.lookup(&label) {
        Lookup::Live(route) if route.kind == RouteKind::TlsPassthrough => page(
            StatusCode::MISDIRECTED_REQUEST,
            "TLS only",
            &format!("{host} is served over HTTPS by its owner directly."),
        ),
        Lookup::Live(route) => proxy(state, route, req, &host).await,
        Lookup::Parked { retry_after } => retry_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Tunnel reconnecting",
            &format!(
                "The tunnel for {host} dropped a moment ago; its owner's client is expected back. Try again shortly."
            ),
            retry_after.as_secs().min(30),
        ),
        Lookup::Offline => page(
            StatusCode::BAD_GATEWAY,
            "Tunnel offline",
            &format!("{host} is reserved, but its owner is not connected right now."),
        ),
        Lookup::Unknown => no_tunnel(&host),
    }
}

/// 308 keeps the method and body, unlike 301/302.
fn redirect_to_https(host: &str, port: u16, uri: &Uri) -> Response<Body> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut resp = page(
        StatusCode::PERMANENT_REDIRECT,
        "Moved to HTTPS",
        &format!("This site is at {location}."),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn no_tunnel(host: &str) -> Response<Body> {
    page(
        StatusCode::NOT_FOUND,
        "No tunnel here",
        &format!("There is no tunnel at {host}."),
    )
}

async fn proxy(
    state: &ConnState,
    route: Arc<Route>,
    mut req: Request<Incoming>,
    host: &str,
) -> Response<Body> {
    let started = Instant::now();
    let line = RequestLine::of(&req);
    let (permit, mut sender) = match upstream_for(state, &route).await {
        Ok(x) => x,
        Err(resp) => return resp.finish(&route, &line, started),
    };
    let visitor_upgrade =
        upgrade_token(req.headers()).map(|token| (token, hyper::upgrade::on(&mut req)));
    let (mut parts, body) = req.into_parts();
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    let original_host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some((token, _)) = &visitor_upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, token.clone());
    }
    if original_host.is_none()
        && let Ok(v) = HeaderValue::from_str(host)
    {
        parts.headers.insert(header::HOST, v);
    }
    let public_host = original_host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or(host)
        .to_owned();
    add_forwarded(&mut parts.headers, state, &public_host);

    let mut resp = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp,
        Err(e) => {
            debug!(error = %e, "upstream request failed");
            return Failure::Owner(
                "The tunnel's service closed the connection without answering.".into(),
                "the local service closed the connection without answering".into(),
            )
            .finish(&route, &line, started);
        }
    };
    route.requests.fetch_add(1, Ordering::Relaxed);
    route.endpoint.notify(line.log(resp.status(), started));

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some((_, visitor)) = visitor_upgrade
    {
        let origin = hyper::upgrade::on(&mut resp);
        // The upgraded connection outlives the visitor's HTTP connection: it keeps the slot.
        tokio::spawn(async move {
            let _slot = permit;
            let (v, o) = (visitor.await, origin.await);
            debug!(visitor = v.is_ok(), origin = o.is_ok(), "upgrade");
            if let (Ok(v), Ok(o)) = (v, o) {
                let (mut v, mut o) = (TokioIo::new(v), TokioIo::new(o));
                // No idle timeout: WebSockets may sit quiet for hours.
                let r = tokio::io::copy_bidirectional(&mut v, &mut o).await;
                debug!(?r, "splice ended");
            }
        });
        return resp.map(|b| b.boxed());
    }
    drop(permit);
    state.keep(&route, sender);
    strip_hop_by_hop(resp.headers_mut());
    // We speak HTTP/1.1 to the visitor whatever the origin spoke to us.
    *resp.version_mut() = Version::HTTP_11;
    resp.map(|b| b.boxed())
}

/// The visitor connection's upstream if it still serves `route`, else a new one.
/// This visitor connection's slot on the tunnel, and an upstream connection: an idle one from
/// the tunnel's pool, or a new `forwarded-tcpip` channel.
async fn upstream_for(
    state: &ConnState,
    route: &Arc<Route>,
) -> Result<(Arc<OwnedSemaphorePermit>, SendRequest<Incoming>), Failure> {
    let permit = state.slot(route)?;
    // This visitor's own connection first: waiting for it to be ready only ever waits on this
    // visitor's previous response. Then one another visitor left behind.
    while let Some(mut sender) = state.take_own(route) {
        if sender.ready().await.is_ok() {
            return Ok((permit, sender));
        }
    }
    if let Some(sender) = pooled(route).await {
        return Ok((permit, sender));
    }
    let stream = route.endpoint.open(state.peer).await.map_err(|e| match e {
        OpenError::Refused(why) => Failure::Owner(
            "The tunnel is up, but nothing answered on the owner's side (connection refused)."
                .into(),
            format!("{why}: is your local service running?"),
        ),
        OpenError::Unreachable(why) => Failure::Unreachable(why),
    })?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    // On the tunnel's thread, beside its SSH session, whichever thread this visitor landed on
    // (an HTTPS visitor whose SNI names no tunnel is placed in turn). The connection outlives
    // this visitor in the tunnel's pool, and the next visitor, on the right thread, should not
    // pay a cross-thread wake per packet for the one before.
    state.edge.shards.spawn(route.endpoint.shard(), async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "upstream connection ended");
        }
    });
    Ok((permit, sender))
}

/// Why a request could not be proxied.
enum Failure {
    /// The tunnel's connection limit is reached.
    Busy,
    /// The owner's side failed: (visitor text, owner text).
    Owner(String, String),
    /// The SSH session did not give us a stream.
    Unreachable(String),
}

impl Failure {
    fn finish(self, route: &Route, line: &RequestLine, started: Instant) -> Response<Body> {
        let resp = match &self {
            Failure::Busy => retry_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Tunnel busy",
                "This tunnel has too many open connections right now. Try again shortly.",
                1,
            ),
            Failure::Owner(visitor, _) => page(StatusCode::BAD_GATEWAY, "Bad gateway", visitor),
            Failure::Unreachable(_) => page(
                StatusCode::BAD_GATEWAY,
                "Tunnel unreachable",
                "The tunnel's SSH session did not answer.",
            ),
        };
        let mut log = line.log(resp.status(), started);
        match self {
            Failure::Owner(_, owner) => log.push_str(&format!(" ({owner})")),
            Failure::Unreachable(why) => log.push_str(&format!(" ({why})")),
            Failure::Busy => log.push_str(" (too many connections)"),
        }
        route.endpoint.notify(log);
        resp
    }
}

/// Method and path of a request, made safe for the owner's terminal.
struct RequestLine {
    method: String,
    path: String,
}

impl RequestLine {
    fn of<B>(req: &Request<B>) -> Self {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut clean: String = path
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(120)
            .collect();
        if path.len() > 120 {
            clean.push('…');
        }
        Self {
            method: req.method().as_str().chars().take(16).collect(),
            path: clean,
        }
    }

    fn log(&self, status: StatusCode, started: Instant) -> String {
        format!(
            "{} {} {} {}ms",
            self.method,
            self.path,
            status.as_u16(),
            started.elapsed().as_millis()
        )
    }
}

fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| Uri::from_static("/"))
}

/// The `Upgrade` value if the request asks for a protocol switch (WebSocket or any other).
fn upgrade_token(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    wants.then(|| upgrade.clone())
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(name);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Sets `X-Forwarded-*`, `X-Real-IP` and `Forwarded`. A visitor's own values are dropped
/// unless the peer is a trusted proxy, whose chain is extended instead.
fn add_forwarded(headers: &mut HeaderMap, state: &ConnState, host: &str) {
    let trusted = state.edge.trusts(&state.peer);
    let ip = state.peer.ip();
    let joined = |headers: &HeaderMap, name: &HeaderName| -> Option<String> {
        let parts: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    };
    let (xff, fwd, proto, xhost, real) = if trusted {
        (
            joined(headers, &X_FORWARDED_FOR),
            joined(headers, &header::FORWARDED),
            headers.get(&X_FORWARDED_PROTO).cloned(),
            headers.get(&X_FORWARDED_HOST).cloned(),
            headers.get(&X_REAL_IP).cloned(),
        )
    } else {
        (None, None, None, None, None)
    };
    for name in [
        &X_FORWARDED_FOR,
        &header::FORWARDED,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &X_REAL_IP,
    ] {
        headers.remove(name);
    }
    let xff = match xff {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.to_string(),
    };
    let node = if ip.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip.to_string()
    };
    let element = format!("for={node};proto={};host=\"{host}\"", state.proto);
    let fwd = match fwd {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    let set = |headers: &mut HeaderMap, name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set(headers, X_FORWARDED_FOR, xff);
    set(headers, header::FORWARDED, fwd);
    headers.insert(
        X_FORWARDED_PROTO,
        proto.unwrap_or(HeaderValue::from_static(state.proto)),
    );
    match xhost {
        Some(v) => {
            headers.insert(X_FORWARDED_HOST, v);
        }
        None => set(headers, X_FORWARDED_HOST, host.to_owned()),
    }
    match real {
        Some(v) => {
            headers.insert(X_REAL_IP, v);
        }
        None => set(headers, X_REAL_IP, ip.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn detects_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(upgrade_token(&h).is_none());
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            upgrade_token(&h).as_ref().map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
    }

    #[test]
    fn origin_form_drops_authority() {
        let uri: Uri = "http://chat.example.com/a?b=1".parse().expect("uri");
        assert_eq!(origin_form(&uri), "/a?b=1");
        let uri: Uri = "http://chat.example.com".parse().expect("uri");
        assert_eq!(origin_form(&uri), "/");
    }
}

//! One visitor connection's requests: routed by host to a live tunnel, then proxied to its
//! origin over an upstream connection ([`pool`]), with the headers [`headers`] rules.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, debug};
use warren_registry::{Lookup, OpenError, PacedIo, Route, RouteKind};

use crate::Edge;
use crate::headers::{self, Forwarding, RequestHost, Scheme, request_host};
use crate::host::{HostError, Target};
use crate::pages::{Body, page, retry_page};
use crate::pool::{self, InFlight, Upstream, VisitorUpstreams};
use crate::record::{Exchange, Pending};

/// State of one visitor connection.
pub(crate) struct ConnState {
    edge: Arc<Edge>,
    peer: SocketAddr,
    proto: Scheme,
    /// The SNI of a TLS connection; requests for another tunnel get 421.
    sni_label: Option<String>,
    requests: AtomicU64,
    /// The tunnel connection slots this visitor connection holds, one per tunnel it used (the
    /// per-tunnel limit counts visitor connections). Never locked across an await.
    slots: Mutex<Vec<(Arc<Route>, Arc<OwnedSemaphorePermit>)>>,
    /// The upstream connections it used last, and how many of its requests may be at one.
    upstreams: VisitorUpstreams,
    /// Its place among the connections without a request head yet, given back at the first.
    pending: Option<warren_admit::PendingSlot>,
    /// Whether the connection's span names its tunnel and visitor yet (see `describe`).
    described: AtomicBool,
}

impl ConnState {
    pub(crate) fn new(
        edge: Arc<Edge>,
        peer: SocketAddr,
        proto: Scheme,
        sni_label: Option<String>,
    ) -> Self {
        Self {
            edge,
            peer,
            proto,
            sni_label,
            requests: AtomicU64::new(0),
            slots: Mutex::new(Vec::new()),
            upstreams: VisitorUpstreams::new(),
            pending: None,
            described: AtomicBool::new(false),
        }
    }

    /// Names the tunnel's tenant (user id), name (`tunnel`) and the visitor's address on this connection's
    /// span, so every later line about it carries them. Once per connection: the log formatters
    /// append a recorded field rather than replace it, and a keep-alive connection's span must
    /// not grow with each request.
    fn describe<B>(&self, route: &Route, req: &Request<B>) {
        if !self.described.swap(true, Ordering::Relaxed) {
            let span = tracing::Span::current();
            span.record("tenant", route.owner);
            span.record("tunnel", route.name.as_str());
            span.record("visitor", tracing::field::display(self.visitor_ip(req)));
        }
    }

    /// Gives `slot` back when the first request head arrives.
    pub(crate) fn pending(mut self, slot: Option<warren_admit::PendingSlot>) -> Self {
        self.pending = slot;
        self
    }

    /// Requests seen on this connection so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The visitor's address as `req` tells it: the peer's, unless the peer is a trusted
    /// proxy (then the address its forwarded headers name).
    fn visitor_ip<B>(&self, req: &Request<B>) -> std::net::IpAddr {
        let trusted = &self.edge.settings.trusted_proxies;
        headers::visitor_ip(req.headers(), self.peer.ip(), |ip| {
            trusted.iter().any(|n| n.contains(&ip))
        })
    }

    /// This visitor connection's slot on `route`, taken on first use.
    fn slot(&self, route: &Arc<Route>) -> Result<Arc<OwnedSemaphorePermit>, Failure> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Slots of routes that are gone (re-bound, unbound) are of no further use.
        slots.retain(|(r, _)| Arc::strong_count(r) > 1 || Arc::ptr_eq(r, route));
        if let Some((_, permit)) = slots.iter().find(|(r, _)| Arc::ptr_eq(r, route)) {
            return Ok(permit.clone());
        }
        let permit = Arc::new(route.take_slot().ok_or_else(|| {
            self.edge
                .metrics
                .limit_hit(warren_metrics::Limit::TunnelConnections);
            Failure::Busy
        })?);
        slots.push((route.clone(), permit.clone()));
        Ok(permit)
    }
}

/// hyper's service function: route, proxy, answer. Never fails: every problem is a page.
pub(crate) async fn handle(
    state: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(pending) = &state.pending {
        // A whole request head is in: no longer a connection that has said nothing.
        pending.release();
    }
    let tls = state.proto == Scheme::Https;
    let started = Instant::now();
    let mut resp = serve_request(&state, req).await;
    // Handles resolved once (warren-metrics): an index and two atomic adds per request.
    state
        .edge
        .metrics
        .request(resp.status().as_u16(), started.elapsed());
    if tls
        && let Some(max_age) = state.edge.settings.hsts_max_age
        && let Ok(v) = HeaderValue::from_str(&format!("max-age={max_age}"))
    {
        resp.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    Ok(resp)
}

/// The answer to one request: a page of our own (CONNECT, a bad host, an ACME challenge, no
/// such tunnel, the SNI's 421, the HTTPS redirect, an access rule), or the tunnel's own.
async fn serve_request(state: &Arc<ConnState>, req: Request<Incoming>) -> Response<Body> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let edge = &state.edge;
    if req.method() == Method::CONNECT {
        return connect_refused();
    }
    let host = match request_host(req.uri(), req.headers(), &edge.settings.domain) {
        Ok(host) => host,
        Err(e) => return bad_host(&e),
    };
    // ACME HTTP-01 answers come first and are never redirected (RFC 8555 §8.3).
    if state.proto == Scheme::Http
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
    // A custom domain is served as the name it aliases; only those pay for a lookup here.
    let aliased;
    let label: &str = match &host.target {
        Target::Tunnel(label) => label,
        Target::Elsewhere(other) => match edge.registry.alias(other) {
            Some(name) => {
                aliased = name;
                &aliased
            }
            None => return no_tunnel(&host.name),
        },
    };
    if let Some(sni) = &state.sni_label
        && sni.as_str() != label
    {
        // A connection set up for one tunnel's name must not carry another's requests.
        return page(
            StatusCode::MISDIRECTED_REQUEST,
            "Misdirected request",
            &format!(
                "This connection was opened for another host than {}.",
                host.name
            ),
        );
    }
    // A custom domain goes to HTTPS only once its own certificate is in: until then the
    // redirect would lead its visitors to a TLS alert.
    if state.proto == Scheme::Http
        && let Some(https_port) = edge.settings.redirect_https_port
        && (matches!(host.target, Target::Tunnel(_)) || edge.has_certificate(&host.name))
    {
        return redirect_to_https(&host.name, https_port, req.uri());
    }
    let name = &host.name;
    match edge.registry.lookup(label) {
        Lookup::Live(route) if route.kind == RouteKind::TlsPassthrough => page(
            StatusCode::MISDIRECTED_REQUEST,
            "TLS only",
            &format!("{name} is served over HTTPS by its owner directly."),
        ),
        Lookup::Live(route) => {
            state.describe(&route, &req);
            let mut req = req;
            let tls = state.proto == Scheme::Https;
            let started = Instant::now();
            if let Some(answer) =
                crate::access::check(edge, state.peer, tls, &route, &mut req, label, name).await
            {
                // Kept out (or sent to sign in) by the name's rules: logged like any answer,
                // so the owner sees who was refused, not only who got in.
                return Exchange::start(&route, &req, started, || state.visitor_ip(&req))
                    .respond(answer);
            }
            proxy(state, route, req, &host, started).await
        }
        Lookup::Parked { retry_after } => retry_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Tunnel reconnecting",
            &format!(
                "The tunnel for {name} dropped a moment ago; its owner's client is expected back. Try again shortly."
            ),
            retry_after.as_secs().min(30),
        ),
        Lookup::Offline => page(
            StatusCode::BAD_GATEWAY,
            "Tunnel offline",
            &format!("{name} is reserved, but its owner is not connected right now."),
        ),
        Lookup::Unknown => no_tunnel(name),
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

/// 400 for a request whose host is missing, malformed or ambiguous.
fn bad_host(e: &HostError) -> Response<Body> {
    let why = match e {
        HostError::Missing => "The request did not say which host it is for.",
        HostError::Invalid => "The Host header is not a valid host name.",
        HostError::Duplicate => "The request has more than one Host header.",
        HostError::Mismatch => "The Host header names another host than the request's target.",
    };
    page(StatusCode::BAD_REQUEST, "Bad request", why)
}

/// Methods a tunnel serves: any but CONNECT.
const ALLOW: HeaderValue = HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");

/// 405 for CONNECT: the edge is not a forward proxy, and an origin would be handed a request
/// it cannot make sense of (`CONNECT /`).
fn connect_refused() -> Response<Body> {
    let mut resp = page(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "CONNECT is not served here: tunnels carry HTTP requests, not proxy tunnels.",
    );
    resp.headers_mut().insert(header::ALLOW, ALLOW);
    resp
}

fn no_tunnel(host: &str) -> Response<Body> {
    page(
        StatusCode::NOT_FOUND,
        "No tunnel here",
        &format!("There is no tunnel at {host}."),
    )
}

/// Proxies `req` to `route`'s origin; every answer (the origin's or a page) is counted and
/// logged through its [`Exchange`]. `started`: when the request was handed to the route (its
/// access check included).
async fn proxy(
    state: &ConnState,
    route: Arc<Route>,
    mut req: Request<Incoming>,
    host: &RequestHost,
    started: Instant,
) -> Response<Body> {
    let line = RequestLine::of(&req);
    let exchange = Exchange::start(&route, &req, started, || state.visitor_ip(&req));
    let (slot, in_flight, mut upstream) = match upstream_for(state, &route).await {
        Ok(x) => x,
        Err(failure) => return exchange.respond(failure.finish(&route, &line, started)),
    };
    let visitor_upgrade =
        upgrade_token(req.headers()).map(|token| (token, hyper::upgrade::on(&mut req)));
    let (mut parts, body) = req.into_parts();
    let body = exchange.request_body(body);
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    headers::drop_underscored(h);
    headers::join_cookies(h);
    if let Some((token, _)) = &visitor_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, token.clone());
    }
    // Exactly one Host, the routed one, whatever the visitor sent beside it.
    h.insert(header::HOST, host.value.clone());
    let forwarding = Forwarding {
        peer: state.peer.ip(),
        proto: state.proto,
        host: &host.value,
        trusted: state.edge.trusts(&state.peer),
    };
    headers::add_forwarded(h, &forwarding);

    let limit = state.edge.settings.origin_timeout;
    let sent = tokio::time::timeout(
        limit,
        upstream.send.send_request(Request::from_parts(parts, body)),
    );
    let mut resp = match sent.await {
        Err(_) => {
            // The upstream connection is dropped with the request (never reused mid-answer).
            return exchange.respond(Failure::Slow(limit).finish(&route, &line, started));
        }
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            debug!(error = %e, "upstream request failed");
            return exchange.respond(
                Failure::Owner(
                    "The tunnel's service closed the connection without answering.".into(),
                    "the local service closed the connection without answering".into(),
                )
                .finish(&route, &line, started),
            );
        }
    };
    let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switched && visitor_upgrade.is_none() {
        // The upstream connection now speaks something else: it is dropped, not kept.
        return exchange.respond(
            Failure::Owner(
                "The tunnel's service switched protocols, which this request did not ask for."
                    .into(),
                "the local service answered 101 Switching Protocols to a request without Upgrade"
                    .into(),
            )
            .finish(&route, &line, started),
        );
    }
    route.requests.fetch_add(1, Ordering::Relaxed);
    route.endpoint.notify(line.log(resp.status(), started));
    headers::confine_cookies(resp.headers_mut(), &host.name);

    if switched && let Some((_, visitor)) = visitor_upgrade {
        let origin = hyper::upgrade::on(&mut resp);
        // The upgraded connection outlives the visitor's HTTP connection: it keeps the slot.
        tokio::spawn(splice(visitor, origin, route, slot, exchange.upgraded()).in_current_span());
        return resp.map(|b| b.boxed());
    }
    drop(slot);
    state.upstreams.keep(&route, upstream, in_flight);
    headers::strip_hop_by_hop(resp.headers_mut());
    // We speak HTTP/1.1 to the visitor whatever the origin spoke to us.
    *resp.version_mut() = Version::HTTP_11;
    exchange.respond(resp)
}

/// Relays an upgraded connection (WebSocket, or any protocol switch) byte for byte until
/// either side closes, holding the visitor's `slot` meanwhile; it is one `entry` in the log,
/// written when it ends, with the bytes spliced.
async fn splice(
    visitor: hyper::upgrade::OnUpgrade,
    origin: hyper::upgrade::OnUpgrade,
    route: Arc<Route>,
    slot: Arc<OwnedSemaphorePermit>,
    entry: Option<Pending>,
) {
    let _slot = slot;
    let (v, o) = (visitor.await, origin.await);
    debug!(visitor = v.is_ok(), origin = o.is_ok(), "upgrade");
    let (mut read, mut written, mut clean) = (0, 0, false);
    if let (Ok(v), Ok(o)) = (v, o) {
        let mut v = PacedIo::visitor(TokioIo::new(v), &route);
        let mut o = TokioIo::new(o);
        // No idle timeout: WebSockets may sit quiet for hours.
        let r = tokio::io::copy_bidirectional(&mut v, &mut o).await;
        debug!(?r, "splice ended");
        (read, written, clean) = (v.read, v.written, r.is_ok());
    }
    if let Some(entry) = entry {
        let status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
        entry.record_moved(status, read, written, clean);
    }
}

/// This visitor connection's slot on the tunnel, its turn among its requests in flight, and an
/// upstream connection: the one it used last, an idle one from the tunnel's pool, or a new
/// `forwarded-tcpip` channel.
async fn upstream_for<'a>(
    state: &'a ConnState,
    route: &Arc<Route>,
) -> Result<(Arc<OwnedSemaphorePermit>, InFlight<'a>, Upstream), Failure> {
    let slot = state.slot(route)?;
    // Past the cap, wait for one of this connection's upstreams rather than open another.
    let in_flight = state.upstreams.start().await;
    // This visitor's own connection first: waiting for it to be ready only ever waits on this
    // visitor's previous response. Then one another visitor left behind.
    while let Some(mut upstream) = state.upstreams.take_own(route) {
        if upstream.send.ready().await.is_ok() {
            return Ok((slot, in_flight, upstream));
        }
    }
    if let Some(upstream) = pool::take(route).await {
        return Ok((slot, in_flight, upstream));
    }
    let stream = route.endpoint.open(state.peer).await.map_err(|e| match e {
        OpenError::Refused(why) => Failure::Owner(
            "The tunnel is up, but nothing answered on the owner's side (connection refused)."
                .into(),
            format!("{why}: is your local service running?"),
        ),
        OpenError::Unreachable(why) => Failure::Unreachable(why),
        OpenError::Away(why) => Failure::Away(why),
    })?;
    let (send, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    // On the tunnel's thread, beside its SSH session, whichever thread this visitor landed on
    // (an HTTPS visitor whose SNI names no tunnel is placed in turn). The connection outlives
    // this visitor in the tunnel's pool, and the next visitor, on the right thread, should not
    // pay a cross-thread wake per packet for the one before.
    let thread = state.edge.shards.spawn(route.endpoint.shard(), async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "upstream connection ended");
        }
    });
    Ok((slot, in_flight, Upstream { send, thread }))
}

/// `Retry-After` when the node holding a tunnel does not answer: about a third of the default
/// node lease, after which the tunnel's owner may have reconnected elsewhere.
const AWAY_RETRY_SECS: u64 = 3;

/// Why a request could not be proxied.
enum Failure {
    /// The tunnel's connection limit is reached.
    Busy,
    /// The owner's side failed: (visitor text, owner text).
    Owner(String, String),
    /// No stream to talk HTTP on: the SSH session did not open one, or the HTTP handshake
    /// on it failed.
    Unreachable(String),
    /// The cluster node holding the tunnel did not answer.
    Away(String),
    /// The origin sent no response head within `origin_timeout`.
    Slow(Duration),
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
            Failure::Away(_) => retry_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Tunnel moving",
                "The server holding this tunnel did not answer; its owner will be back on another one shortly. Try again in a few seconds.",
                AWAY_RETRY_SECS,
            ),
            Failure::Slow(limit) => page(
                StatusCode::GATEWAY_TIMEOUT,
                "Gateway timeout",
                &format!(
                    "The tunnel's service did not answer within {} s.",
                    limit.as_secs()
                ),
            ),
        };
        let mut log = line.log(resp.status(), started);
        match self {
            Failure::Owner(_, owner) => log.push_str(&format!(" ({owner})")),
            Failure::Unreachable(why) | Failure::Away(why) => log.push_str(&format!(" ({why})")),
            Failure::Busy => log.push_str(" (too many connections)"),
            Failure::Slow(limit) => log.push_str(&format!(
                " (the local service did not answer within {} s)",
                limit.as_secs()
            )),
        }
        debug!(status = resp.status().as_u16(), why = %log, "tunnel request failed");
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

#[cfg(test)]
mod tests {
    use super::*;

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

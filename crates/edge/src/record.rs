//! What the edge writes into a tunnel's request log (`warren_registry::RequestLog`): one
//! entry per proxied request, made when its response has been handed to the visitor's
//! connection, or when the visitor went away first, with what was known by then.
//!
//! An [`Exchange`] is started with the request; its body is counted on the way to the origin
//! ([`crate::meter::RequestBody`]) and the response's on the way back
//! ([`crate::meter::Metered`]), whose drop writes the entry. A WebSocket (or any upgrade) is
//! one entry, written when the spliced connection ends. The path is stored with the query
//! string's values redacted: tunnels carry tokens, codes and e-mail addresses in queries, and
//! the log is shown in a browser.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::BodyExt;
use warren_registry::{RequestEntry, Route};

use crate::meter::{Metered, RequestBody};
use crate::pages::Body;

/// The longest path kept (bytes, before the `…` that marks a cut): long enough for any path
/// a person reads, short enough that a full log of long URLs stays small (1,000 entries).
pub(crate) const PATH_MAX: usize = 256;

/// The longest `User-Agent` kept: browsers' are 100-150 bytes.
pub(crate) const USER_AGENT_MAX: usize = 160;

/// The most header bytes kept per request. A browser's request head is 0.5-2 KB, mostly
/// cookies (shown as `…`) and `Accept*`; a full ring of 1,000 entries stays near 1 MB per
/// tunnel even when a visitor pads every request.
pub(crate) const HEADERS_MAX: usize = 1024;

/// The longest header value kept.
const HEADER_VALUE_MAX: usize = 128;

/// What replaces each query value.
const REDACTED: &str = "…";

/// One request on its way through the edge, for its tunnel's counters and log.
pub(crate) struct Exchange {
    route: Arc<Route>,
    /// The entry being made; `None` when the route keeps no log, or once handed on.
    pending: Option<Pending>,
}

/// An entry waiting for its response to end.
pub(crate) struct Pending {
    /// Whose log the entry goes to: this node's, or the holding node's (`Route::record`).
    route: Arc<Route>,
    started: Instant,
    at_ms: u64,
    method: Cow<'static, str>,
    path: String,
    visitor: IpAddr,
    user_agent: String,
    headers: String,
    /// Request body bytes so far, counted by the body on its way to the origin (on the
    /// upstream connection's task); `None` for a request without a body.
    bytes_in: Option<Arc<AtomicU64>>,
}

impl Exchange {
    /// Starts `req`'s exchange on `route`, which arrived at `started`; `visitor` is its real
    /// address (see `headers::visitor_ip`), asked for only when the route keeps a log.
    pub(crate) fn start<B: hyper::body::Body>(
        route: &Arc<Route>,
        req: &Request<B>,
        started: Instant,
        visitor: impl FnOnce() -> IpAddr,
    ) -> Self {
        let pending = route.keeps_requests().then(|| Pending {
            route: route.clone(),
            started,
            at_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            method: method(req.method()),
            path: redact(
                req.uri()
                    .path_and_query()
                    .map_or(&b"/"[..], |p| p.as_str().as_bytes()),
            ),
            visitor: visitor(),
            user_agent: user_agent(req.headers()),
            headers: headers(req.headers()),
            // Most requests (GETs) have no body: no counter to share with it.
            bytes_in: (!req.body().is_end_stream()).then(|| Arc::new(AtomicU64::new(0))),
        });
        Self {
            route: route.clone(),
            pending,
        }
    }

    /// The request body as it should go to the origin: counted.
    pub(crate) fn request_body(&self, body: hyper::body::Incoming) -> RequestBody {
        RequestBody::new(
            body,
            self.route.clone(),
            self.pending.as_ref().and_then(|p| p.bytes_in.clone()),
        )
    }

    /// `resp` as it goes to the visitor: its body counted, and the entry written when the body
    /// ends or is dropped.
    pub(crate) fn respond<B>(mut self, resp: Response<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + Unpin + 'static,
    {
        let status = resp.status().as_u16();
        let pending = self.pending.take();
        let route = self.route.clone();
        resp.map(|b| Metered::new(b, route, pending.map(|p| (p, status))).boxed())
    }

    /// Hands the entry to an upgraded connection's splice, which writes it when it ends.
    pub(crate) fn upgraded(mut self) -> Option<Pending> {
        self.pending.take()
    }
}

impl Drop for Exchange {
    /// Neither answered nor upgraded: the visitor went away while the origin was still being
    /// asked (hyper dropped the request's future).
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.record(499, 0, false);
        }
    }
}

impl Pending {
    /// Writes the entry: `status` sent, `bytes_out` handed to the visitor, whether the whole
    /// response went.
    pub(crate) fn record(self, status: u16, bytes_out: u64, complete: bool) {
        let bytes_in = self
            .bytes_in
            .as_ref()
            .map_or(0, |b| b.load(Ordering::Relaxed));
        self.record_moved(status, bytes_in, bytes_out, complete);
    }

    /// Writes the entry with both byte counts given (an upgraded connection's splice).
    pub(crate) fn record_moved(self, status: u16, bytes_in: u64, bytes_out: u64, complete: bool) {
        self.route.record(RequestEntry {
            at_ms: self.at_ms,
            method: self.method,
            path: self.path,
            status,
            duration: self.started.elapsed(),
            bytes_in,
            bytes_out,
            visitor: self.visitor,
            user_agent: self.user_agent,
            headers: self.headers,
            complete,
        });
    }
}

/// Standard methods are kept without an allocation; others are cut to 16 bytes.
fn method(m: &Method) -> Cow<'static, str> {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().find(|s| **s == m.as_str()) {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(escape(m.as_str().as_bytes(), 16)),
    }
}

/// The `User-Agent` header, escaped and cut to [`USER_AGENT_MAX`]; empty without one.
fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .map(|v| escape(v.as_bytes(), USER_AGENT_MAX))
        .unwrap_or_default()
}

/// The headers as `name: value` lines, for a request's detail in the console: credentials,
/// cookies and anything named like a secret show `…` instead of their value (the log is read
/// in a browser, maybe by another admin); values are escaped and cut to 256 bytes, the whole
/// to [`HEADERS_MAX`].
pub(crate) fn headers(headers: &HeaderMap) -> String {
    let mut out = String::with_capacity(512);
    for (name, value) in headers {
        let name = name.as_str();
        // Room for the longest line this header can make, and the "more" mark.
        if out.len() + name.len() + HEADER_VALUE_MAX + 16 > HEADERS_MAX {
            out.push_str("…: …\n");
            break;
        }
        out.push_str(name);
        out.push_str(": ");
        if secret(name) {
            out.push_str(REDACTED);
        } else if carries_url(name) {
            // The query of a URL is redacted as the request's own path is.
            let start = out.len();
            out.push_str(&redact(value.as_bytes()));
            if out.len() - start > HEADER_VALUE_MAX {
                cut_at(&mut out, start + HEADER_VALUE_MAX);
            }
        } else {
            let start = out.len();
            push_escaped(&mut out, upto(value.as_bytes(), HEADER_VALUE_MAX));
            if out.len() - start > HEADER_VALUE_MAX {
                cut_at(&mut out, start + HEADER_VALUE_MAX);
            }
        }
        out.push('\n');
    }
    out
}

/// Cuts `out` at `end` (or the character boundary before it) and marks the cut.
fn cut_at(out: &mut String, mut end: usize) {
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out.push_str(REDACTED);
}

/// Header names (lowercase, as `http` keeps them) whose values are credentials: the usual
/// ones, bearer tokens smuggled in WebSocket subprotocols, signed assertions (JWTs, DPoP), and
/// anything named like a secret.
fn secret(name: &str) -> bool {
    // The headers nearly every request has are settled by one `match` (a length switch and a
    // compare) instead of ten substring searches each: this runs for every header of every
    // logged request.
    if matches!(
        name,
        "host"
            | "user-agent"
            | "accept"
            | "accept-encoding"
            | "accept-language"
            | "connection"
            | "content-type"
            | "content-length"
            | "cache-control"
            | "pragma"
            | "origin"
            | "referer"
            | "upgrade-insecure-requests"
            | "if-none-match"
            | "if-modified-since"
            | "sec-fetch-site"
            | "sec-fetch-mode"
            | "sec-fetch-dest"
            | "sec-fetch-user"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-real-ip"
            | "priority"
    ) {
        return false;
    }
    matches!(
        name,
        "authorization" | "proxy-authorization" | "cookie" | "sec-websocket-protocol" | "dpop"
    ) || [
        "auth",
        "token",
        "secret",
        "passw",
        "key",
        "session",
        "signature",
        "jwt",
        "assertion",
        "credential",
    ]
    .iter()
    .any(|w| name.contains(w))
}

/// Headers whose value is a URL with the query of some page: shown with its values redacted.
fn carries_url(name: &str) -> bool {
    matches!(
        name,
        "referer" | "x-original-url" | "x-forwarded-uri" | "x-rewrite-url"
    )
}

/// The request target with every query value replaced by `…` and its keys kept:
/// `/search?q=cats&page=2` → `/search?q=…&page=…`. A query item without `=` is a key (as
/// `application/x-www-form-urlencoded` parses it) and is kept; an empty key keeps its `=`
/// (`?=x` → `?=…`). Keys are kept as sent, percent-encodings and all (an encoded `%3D` is not
/// a separator). Control characters and bytes that are not UTF-8 are shown as `%XX`. Cut to
/// [`PATH_MAX`] bytes.
pub(crate) fn redact(target: &[u8]) -> String {
    let (path, query) = match target.iter().position(|b| *b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };
    let mut out = String::with_capacity(target.len().min(PATH_MAX + REDACTED.len()));
    push_escaped(&mut out, upto(path, PATH_MAX));
    if let Some(query) = query {
        out.push('?');
        for (i, item) in query.split(|b| *b == b'&').enumerate() {
            if out.len() > PATH_MAX {
                break;
            }
            if i > 0 {
                out.push('&');
            }
            match item.iter().position(|b| *b == b'=') {
                Some(eq) => {
                    push_escaped(&mut out, &item[..eq]);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                None => push_escaped(&mut out, item),
            }
        }
    }
    cut(&mut out, PATH_MAX);
    out
}

/// `raw` as text for a log: UTF-8 kept, control characters and other bytes as `%XX`, cut to
/// `max` bytes.
fn escape(raw: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(raw.len().min(max + REDACTED.len()));
    push_escaped(&mut out, upto(raw, max));
    cut(&mut out, max);
    out
}

/// The start of `raw` that can show in `max` bytes of output, and a little more so that a cut
/// is noticed: escaping only lengthens, and a character that starts within `max` bytes ends
/// within four more, so a character split here lies wholly past the cut.
fn upto(raw: &[u8], max: usize) -> &[u8] {
    &raw[..raw.len().min(max + 4)]
}

fn push_escaped(out: &mut String, raw: &[u8]) {
    use std::fmt::Write;
    // Paths and user agents are printable ASCII nearly always: copied in one go.
    let plain = raw.iter().take_while(|b| (0x20..0x7f).contains(*b)).count();
    // Printable ASCII is UTF-8.
    out.push_str(std::str::from_utf8(&raw[..plain]).unwrap_or_default());
    for chunk in raw[plain..].utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                let mut utf8 = [0; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    let _ = write!(out, "%{b:02X}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Cuts `s` to at most `max` bytes (on a character boundary) and marks the cut with `…`.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(REDACTED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_names_and_hide_credentials() {
        let mut h = HeaderMap::new();
        h.insert("host", "chat.example.com".parse().expect("hv"));
        h.insert(
            "authorization",
            "Basic YWxpY2U6c2VjcmV0".parse().expect("hv"),
        );
        h.insert("cookie", "warren_share=abc; sid=def".parse().expect("hv"));
        h.insert("x-api-key", "k-123".parse().expect("hv"));
        h.insert("x-auth-token", "t-456".parse().expect("hv"));
        h.insert("accept", "text/html".parse().expect("hv"));
        h.insert("x-long", "a".repeat(1000).parse().expect("hv"));
        let out = headers(&h);
        assert!(out.contains("host: chat.example.com\n"), "{out}");
        assert!(out.contains("accept: text/html\n"), "{out}");
        for secret in ["YWxpY2U6c2VjcmV0", "abc", "def", "k-123", "t-456"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(
            out.contains("authorization: …\n") && out.contains("cookie: …\n"),
            "{out}"
        );
        let mut r = HeaderMap::new();
        r.insert(
            "referer",
            "https://app.example/reset?token=abc&step=2"
                .parse()
                .expect("hv"),
        );
        r.insert(
            "sec-websocket-protocol",
            "base64url.bearer.authorization.k8s.io.xyz"
                .parse()
                .expect("hv"),
        );
        let seen = headers(&r);
        assert!(
            seen.contains("referer: https://app.example/reset?token=…&step=…\n"),
            "{seen}"
        );
        assert!(!seen.contains("abc") && !seen.contains("xyz"), "{seen}");
        let long = out
            .lines()
            .find(|l| l.starts_with("x-long"))
            .expect("x-long");
        assert_eq!(
            long.len(),
            "x-long: ".len() + HEADER_VALUE_MAX + "…".len(),
            "{long}"
        );
        // Many headers: the whole stays bounded.
        let mut many = HeaderMap::new();
        for i in 0..200 {
            let name: http::HeaderName = format!("x-h{i}").parse().expect("name");
            many.insert(name, "v".repeat(100).parse().expect("hv"));
        }
        let kept = headers(&many);
        assert!(kept.len() <= HEADERS_MAX, "{}", kept.len());
        assert!(kept.ends_with("…: …\n"), "the cut is marked");
    }

    #[test]
    fn query_values_are_redacted_and_keys_kept() {
        for (raw, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/search?q=cats&page=2", "/search?q=…&page=…"),
            ("/x?token=s3cret", "/x?token=…"),
            // Odd queries: a bare key, an empty key, empty items, an empty query.
            ("/x?a", "/x?a"),
            ("/x?=x", "/x?=…"),
            ("/x?a=1&&b", "/x?a=…&&b"),
            ("/x?", "/x?"),
            ("/x?&", "/x?&"),
            ("/x?a==b=c", "/x?a=…"),
            ("?a=1", "?a=…"),
            // Percent-encodings are not separators, in keys or values.
            ("/x?q%3Dk=v%26w=1", "/x?q%3Dk=…"),
            ("/x?a%26b=1&c=%3D", "/x?a%26b=…&c=…"),
            ("/caf%C3%A9?n=%E2%82%AC", "/caf%C3%A9?n=…"),
            // A second `?` is part of the query.
            ("/x?a=1?b=2", "/x?a=…"),
            ("/é?ü=ö", "/é?ü=…"),
        ] {
            assert_eq!(redact(raw.as_bytes()), want, "{raw}");
        }
    }

    #[test]
    fn bytes_that_are_not_text_are_escaped() {
        assert_eq!(redact(b"/caf\xff\xfe?k\xc3=v\xff"), "/caf%FF%FE?k%C3=…");
        assert_eq!(redact(b"/a\x1b[31m\x7f?x\n=1"), "/a%1B[31m%7F?x%0A=…");
        assert_eq!(escape("Mozilla\u{85}/5".as_bytes(), 100), "Mozilla%C2%85/5");
    }

    #[test]
    fn long_paths_and_agents_are_cut() {
        let long = format!("/{}", "a".repeat(1000));
        let r = redact(long.as_bytes());
        assert_eq!(r.len(), PATH_MAX + REDACTED.len());
        assert!(r.ends_with(REDACTED));
        // Thousands of query items stop being read once the path is long enough.
        let many = format!("/x?{}", "key=value&".repeat(10_000));
        let r = redact(many.as_bytes());
        assert!(r.len() <= PATH_MAX + REDACTED.len() && r.starts_with("/x?key=…&key=…"));
        // Never cut inside a character.
        let wide = "é".repeat(200);
        let ua = escape(wide.as_bytes(), USER_AGENT_MAX);
        assert_eq!(ua.len(), USER_AGENT_MAX + REDACTED.len());
        let mut h = HeaderMap::new();
        assert_eq!(user_agent(&h), "");
        h.insert(header::USER_AGENT, "curl/8.5.0".parse().expect("value"));
        assert_eq!(user_agent(&h), "curl/8.5.0");
    }

    #[test]
    fn standard_methods_cost_no_allocation() {
        assert!(matches!(method(&Method::GET), Cow::Borrowed("GET")));
        let odd = Method::from_bytes(b"PROPFIND").expect("method");
        assert_eq!(method(&odd), "PROPFIND");
    }
}

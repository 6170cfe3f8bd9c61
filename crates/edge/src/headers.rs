//! The header rules between a visitor and a tunnel's origin, as pure functions over a
//! `HeaderMap`: which Host a request is for, what the visitor may not pass on (hop-by-hop
//! headers, names with `_`), what the broker adds (`X-Forwarded-*`, `Forwarded`), HTTP/2
//! cookie fields joined for HTTP/1.1, and response cookies kept from reaching other tenants.
//!
//! Each one leaves a map that needs no change as it is, without allocating: most requests
//! need none of them.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Uri;

use crate::host::{HostError, Target, classify_host};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The host a request is for and the tunnel it names.
#[derive(Debug)]
pub(crate) struct RequestHost {
    /// What it names under the edge's domain.
    pub target: Target,
    /// The host name, normalised (lowercase, no port, no trailing dot), for pages and cookies.
    pub name: String,
    /// The routed authority as the visitor wrote it (port included): the origin's one `Host`.
    pub value: HeaderValue,
}

/// The one host a request is for. The target's authority (absolute-form in HTTP/1.1,
/// `:authority` in HTTP/2) routes when there is one (RFC 9112 §3.2.2); a `Host` header beside
/// it must name the same host (ports may differ), or the origin would be told a name the broker
/// never routed. Two `Host` headers are refused outright (RFC 9112 §3.2).
pub(crate) fn request_host(
    uri: &Uri,
    headers: &HeaderMap,
    domain: &str,
) -> Result<RequestHost, HostError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Duplicate);
    }
    let Some(authority) = uri.authority() else {
        let value = header.ok_or(HostError::Missing)?;
        let (target, name) = classify_host(value.as_bytes(), domain)?;
        return Ok(RequestHost {
            target,
            name,
            value: value.clone(),
        });
    };
    let (target, name) = classify_host(authority.as_str().as_bytes(), domain)?;
    let value = match header {
        Some(h) if h.as_bytes() == authority.as_str().as_bytes() => h.clone(),
        Some(h) => {
            match classify_host(h.as_bytes(), domain) {
                Ok((_, other)) if other == name => {}
                _ => return Err(HostError::Mismatch),
            }
            HeaderValue::from_str(authority.as_str()).map_err(|_| HostError::Invalid)?
        }
        None => HeaderValue::from_str(authority.as_str()).map_err(|_| HostError::Invalid)?,
    };
    Ok(RequestHost {
        target,
        name,
        value,
    })
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

/// Headers the broker sets itself: a `Connection` header naming them must not remove them
/// (`Connection: host` once left the origin with no Host at all).
const OWNED: [HeaderName; 6] = [
    header::HOST,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    header::FORWARDED,
    X_REAL_IP,
];

/// Removes hop-by-hop headers, including any the `Connection` header names (RFC 9110 §7.6.1),
/// except the ones the broker owns.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed = |t: &str| {
        HOP_BY_HOP
            .iter()
            .chain(OWNED.iter())
            .any(|n| t.eq_ignore_ascii_case(n.as_str()))
    };
    // Names no list has already (`Connection: keep-alive` is the usual value): none, mostly,
    // so nothing is allocated.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !listed(t))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(name);
    }
}

/// Drops request headers whose name has an `_`, as nginx does by default
/// (`underscores_in_headers off`): CGI and WSGI map `-` and `_` alike to `_`, so an
/// `X_Real_IP` from the visitor would be merged with, or win over, the broker's `X-Real-IP`.
pub(crate) fn drop_underscored(headers: &mut HeaderMap) {
    let has_underscore = |n: &HeaderName| n.as_str().contains('_');
    if !headers.keys().any(has_underscore) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| has_underscore(n))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Joins several `cookie` fields into one, separated by "; ": HTTP/2 sends each cookie as its
/// own field, HTTP/1.1 origins expect one (RFC 9113 §8.2.3).
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if v.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // Valid field values joined by "; " are a valid value.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// How a visitor reached the broker: the scheme the origin is told (`X-Forwarded-Proto`,
/// `Forwarded: proto=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// The plain HTTP listener.
    Http,
    /// The HTTPS listener (TLS ended here).
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Who the broker is forwarding for, as the origin is told it.
pub(crate) struct Forwarding<'a> {
    /// The visitor's (or the trusted proxy's) address.
    pub peer: IpAddr,
    /// How the visitor reached the broker.
    pub proto: Scheme,
    /// The routed host (`RequestHost::value`).
    pub host: &'a HeaderValue,
    /// Whether the peer is a trusted proxy, whose `X-Forwarded-*` / `Forwarded` are kept and
    /// extended; anyone else's are replaced.
    pub trusted: bool,
}

/// Sets `X-Forwarded-*`, `X-Real-IP` and `Forwarded`. A visitor's own values are dropped
/// unless the peer is a trusted proxy, whose chain is extended instead.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let joined = |headers: &HeaderMap, name: &HeaderName| -> Option<String> {
        let parts: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    };
    let (xff, fwd, proto, xhost, real) = if f.trusted {
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
    let ip = f.peer;
    let xff = match xff {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.to_string(),
    };
    let element = forwarded_element(ip, f.proto.as_str(), f.host);
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
        proto.unwrap_or(HeaderValue::from_static(f.proto.as_str())),
    );
    headers.insert(X_FORWARDED_HOST, xhost.unwrap_or_else(|| f.host.clone()));
    match real {
        Some(v) => {
            headers.insert(X_REAL_IP, v);
        }
        None => set(headers, X_REAL_IP, ip.to_string()),
    }
}

/// The visitor's address: `peer`, unless `peer` is a trusted proxy; then, walking the
/// forwarded chain from its nearest hop (`X-Forwarded-For`, else `Forwarded`'s `for=`, else
/// `X-Real-IP`), the first address that is not itself trusted (nginx's `real_ip_recursive`).
/// Hops further out than that were written by whoever a trusted proxy was talking to, and
/// are anyone's invention. A hop that is not an address (`unknown`, an obfuscated name, junk)
/// ends the walk at the last address known.
pub(crate) fn visitor_ip(
    headers: &HeaderMap,
    peer: IpAddr,
    trusted: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    if !trusted(peer) {
        return peer;
    }
    let walk = |hops: &mut dyn Iterator<Item = &str>| {
        let mut ip = peer;
        for hop in hops {
            match hop_address(hop) {
                Some(a) if trusted(a) => ip = a,
                Some(a) => return a,
                None => break,
            }
        }
        ip
    };
    let values = |name: &HeaderName| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    let xff = values(&X_FORWARDED_FOR);
    if !xff.is_empty() {
        return walk(&mut xff.iter().rev().flat_map(|v| v.rsplit(',')));
    }
    let fwd = values(&header::FORWARDED);
    if !fwd.is_empty() {
        let elements: Vec<&str> = fwd.iter().flat_map(|v| split_unquoted(v, b',')).collect();
        let mut hops = elements.iter().rev().map(|element| {
            split_unquoted(element, b';')
                .into_iter()
                .find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then_some(v)
                })
                .unwrap_or("")
        });
        return walk(&mut hops);
    }
    match headers.get(&X_REAL_IP).and_then(|v| v.to_str().ok()) {
        Some(real) => walk(&mut std::iter::once(real)),
        None => peer,
    }
}

/// `s` split at each `sep` outside a quoted string (`host="a,b"` is one parameter; a `\`
/// escapes the next character inside quotes), as RFC 7239 elements and parameters are.
fn split_unquoted(s: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// The address in one forwarded hop: `192.0.2.1`, `2001:db8::1`, with a port (`192.0.2.1:80`,
/// `[2001:db8::1]:80`), or as a `Forwarded` quoted string (`"[2001:db8::1]"`).
fn hop_address(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let hop = hop
        .strip_prefix('"')
        .and_then(|h| h.strip_suffix('"'))
        .unwrap_or(hop);
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    hop.parse()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// One `Forwarded` element (RFC 7239 §4): `for=IP;proto=P;host="HOST"`. The host is a
/// quoted-string with `"` and `\` escaped, so no value can close the quotes and add elements
/// of its own; an IPv6 node is quoted because of its colons.
fn forwarded_element(ip: IpAddr, proto: &str, host: &HeaderValue) -> String {
    use std::fmt::Write;
    let host = String::from_utf8_lossy(host.as_bytes());
    let mut out = String::with_capacity(host.len() + 64);
    // Writing to a String cannot fail.
    let _ = if ip.is_ipv6() {
        write!(out, "for=\"[{ip}]\";proto={proto};host=")
    } else {
        write!(out, "for={ip};proto={proto};host=")
    };
    push_quoted(&mut out, &host);
    out
}

/// `s` as an RFC 9110 quoted-string.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Makes every `Set-Cookie` in a tunnel's response host-only unless its `Domain` is the
/// tunnel's own `host`. Tenants share the parent domain: a cookie `evil.DOMAIN` sets for
/// `DOMAIN` (or for `bank.DOMAIN`) would be sent to every other tenant, fixing their
/// visitors' sessions. The rest of each cookie is kept as the origin wrote it.
pub(crate) fn confine_cookies(headers: &mut HeaderMap, host: &str) {
    if !headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| has_foreign_domain(v.as_bytes(), host))
    {
        return;
    }
    let cookies: Vec<HeaderValue> = match headers.entry(header::SET_COOKIE) {
        header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
        header::Entry::Vacant(_) => return,
    };
    for cookie in cookies {
        if !has_foreign_domain(cookie.as_bytes(), host) {
            headers.append(header::SET_COOKIE, cookie);
            continue;
        }
        let mut kept = Vec::with_capacity(cookie.len());
        for (i, part) in cookie.as_bytes().split(|b| *b == b';').enumerate() {
            if i > 0 && foreign_domain(part, host) {
                continue;
            }
            if i > 0 {
                kept.push(b';');
            }
            kept.extend_from_slice(part);
        }
        // Parts of a valid value are valid; a cookie that somehow is not is dropped, never
        // passed on with its foreign domain.
        if let Ok(v) = HeaderValue::from_bytes(&kept) {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

fn has_foreign_domain(cookie: &[u8], host: &str) -> bool {
    cookie
        .split(|b| *b == b';')
        .skip(1)
        .any(|part| foreign_domain(part, host))
}

/// Whether a cookie attribute is a `Domain` other than `host` (a leading dot and case are
/// ignored, as browsers do: RFC 6265 §5.2.3).
fn foreign_domain(attribute: &[u8], host: &str) -> bool {
    let (name, value) = match attribute.iter().position(|b| *b == b'=') {
        Some(i) => (&attribute[..i], &attribute[i + 1..]),
        None => (attribute, &b""[..]),
    };
    if !name.trim_ascii().eq_ignore_ascii_case(b"domain") {
        return false;
    }
    let value = value.trim_ascii();
    let value = value.strip_prefix(b".").unwrap_or(value);
    !value.eq_ignore_ascii_case(host.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
        h.get_all(name).iter().map(|v| v.as_bytes()).collect()
    }

    #[test]
    fn the_host_is_the_authority_or_the_one_host_header() {
        let origin_form: Uri = "/x".parse().expect("uri");
        let absolute: Uri = "http://chat.example.com:8080/x".parse().expect("uri");
        let host = |uri: &Uri, pairs: &[(&'static str, &'static str)]| {
            request_host(uri, &map(pairs), "example.com")
                .map(|h| (h.target, h.name, h.value.as_bytes().to_vec()))
        };
        let chat = Target::Tunnel("chat".into());
        assert_eq!(
            host(&origin_form, &[("host", "Chat.example.com:1")]),
            Ok((
                chat.clone(),
                "chat.example.com".into(),
                b"Chat.example.com:1".to_vec()
            ))
        );
        assert_eq!(host(&origin_form, &[]), Err(HostError::Missing));
        // The authority routes and is what the origin is told; the header may spell it
        // otherwise, or be absent.
        for pairs in [
            &[][..],
            &[("host", "CHAT.example.com.")],
            &[("host", "chat.example.com:8080")],
        ] {
            assert_eq!(
                host(&absolute, pairs),
                Ok((
                    chat.clone(),
                    "chat.example.com".into(),
                    b"chat.example.com:8080".to_vec()
                )),
                "{pairs:?}"
            );
        }
        for (uri, pairs) in [
            (&absolute, &[("host", "evil.example")][..]),
            (&absolute, &[("host", "x\";for=6.6.6.6")]),
            (&absolute, &[("host", "")]),
        ] {
            assert_eq!(host(uri, pairs), Err(HostError::Mismatch), "{pairs:?}");
        }
        for uri in [&origin_form, &absolute] {
            let twice = [("host", "chat.example.com"), ("host", "chat.example.com")];
            assert_eq!(host(uri, &twice), Err(HostError::Duplicate));
        }
        let userinfo: Uri = "http://u@chat.example.com/".parse().expect("uri");
        assert_eq!(host(&userinfo, &[]), Err(HostError::Invalid));
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn connection_cannot_remove_what_the_broker_owns() {
        let mut h = map(&[
            (
                "connection",
                "Host, X-Forwarded-For,x-forwarded-proto, x-forwarded-host, forwarded, X-Real-IP, x-other",
            ),
            ("host", "chat.example.com"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "h"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-other", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 6);
        assert!(!h.contains_key("x-other") && !h.contains_key("connection"));
    }

    #[test]
    fn drops_names_with_underscores() {
        let mut h = map(&[
            ("x_forwarded_for", "6.6.6.6"),
            ("x_real_ip", "6.6.6.6"),
            ("x-fine", "1"),
        ]);
        drop_underscored(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-fine"));
    }

    #[test]
    fn joins_cookie_fields() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", ""), ("cookie", "b=2; c=3")]);
        join_cookies(&mut h);
        assert_eq!(values(&h, "cookie"), [&b"a=1; b=2; c=3"[..]]);
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(values(&one, "cookie"), [&b"a=1"[..]]);
    }

    fn forwarded(host: &'static str, peer: &str, trusted: bool, h: &mut HeaderMap) {
        let host = HeaderValue::from_static(host);
        let f = Forwarding {
            peer: peer.parse().expect("ip"),
            proto: Scheme::Https,
            host: &host,
            trusted,
        };
        add_forwarded(h, &f);
    }

    #[test]
    fn forwarded_values_are_quoted_and_escaped() {
        let mut h = map(&[("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "6.6.6.6")]);
        forwarded("a\"b\\c:1", "127.0.0.1", false, &mut h);
        assert_eq!(
            values(&h, "forwarded"),
            [&br#"for=127.0.0.1;proto=https;host="a\"b\\c:1""#[..]]
        );
        assert_eq!(values(&h, "x-forwarded-for"), [&b"127.0.0.1"[..]]);
        assert_eq!(values(&h, "x-forwarded-host"), [&b"a\"b\\c:1"[..]]);
        assert_eq!(values(&h, "x-real-ip"), [&b"127.0.0.1"[..]]);

        // A trusted proxy's chain is extended, with our element escaped the same way.
        let mut h = map(&[
            ("forwarded", "for=1.1.1.1"),
            ("forwarded", "for=2.2.2.2"),
            ("x-forwarded-for", "1.1.1.1"),
        ]);
        forwarded("q\"", "::1", true, &mut h);
        assert_eq!(
            values(&h, "forwarded"),
            [&br#"for=1.1.1.1, for=2.2.2.2, for="[::1]";proto=https;host="q\"""#[..]]
        );
        assert_eq!(values(&h, "x-forwarded-for"), [&b"1.1.1.1, ::1"[..]]);
    }

    #[test]
    fn the_visitor_is_the_peer_unless_a_trusted_proxy_says_otherwise() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        // 10.0.0.0/8 are our proxies.
        let trusted = |a: IpAddr| matches!(a, IpAddr::V4(v4) if v4.octets()[0] == 10);
        let visitor = |pairs: &[(&'static str, &'static str)], peer: &str| {
            visitor_ip(&map(pairs), ip(peer), trusted)
        };
        // An untrusted peer's headers are ignored.
        assert_eq!(
            visitor(&[("x-forwarded-for", "1.1.1.1")], "203.0.113.5"),
            ip("203.0.113.5")
        );
        // The nearest untrusted hop wins; what lies beyond it is the visitor's invention.
        assert_eq!(
            visitor(
                &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")],
                "10.0.0.1"
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            visitor(
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "198.51.100.7 ,10.1.1.1")
                ],
                "10.0.0.1"
            ),
            ip("198.51.100.7")
        );
        // Ports and brackets, v4 and v6.
        assert_eq!(
            visitor(&[("x-forwarded-for", "[2001:db8::7]:4711")], "10.0.0.1"),
            ip("2001:db8::7")
        );
        assert_eq!(
            visitor(&[("x-forwarded-for", "198.51.100.7:80")], "10.0.0.1"),
            ip("198.51.100.7")
        );
        // All trusted: the farthest one; junk: the last address known; none: the peer.
        assert_eq!(
            visitor(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")], "10.0.0.1"),
            ip("10.9.9.9")
        );
        assert_eq!(
            visitor(
                &[("x-forwarded-for", "1.1.1.1, unknown, 10.0.0.2")],
                "10.0.0.1"
            ),
            ip("10.0.0.2")
        );
        assert_eq!(
            visitor(&[("x-forwarded-for", "")], "10.0.0.1"),
            ip("10.0.0.1")
        );
        assert_eq!(visitor(&[], "10.0.0.1"), ip("10.0.0.1"));
        // Forwarded, when there is no X-Forwarded-For; then X-Real-IP.
        assert_eq!(
            visitor(
                &[(
                    "forwarded",
                    "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, For=10.0.0.2;host=\"a,b\""
                )],
                "10.0.0.1"
            ),
            ip("2001:db8::7")
        );
        assert_eq!(
            visitor(&[("forwarded", "proto=https;for=_hidden")], "10.0.0.1"),
            ip("10.0.0.1")
        );
        assert_eq!(
            visitor(&[("x-real-ip", "198.51.100.7")], "10.0.0.1"),
            ip("198.51.100.7")
        );
        assert_eq!(
            visitor(
                &[
                    ("x-real-ip", "1.1.1.1"),
                    ("x-forwarded-for", "198.51.100.7")
                ],
                "10.0.0.1"
            ),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn cookies_for_other_hosts_become_host_only() {
        let mut h = map(&[
            ("set-cookie", "sid=x; Domain=example.com; Path=/; HttpOnly"),
            ("set-cookie", "a=1;domain=.bank.example.com"),
            ("set-cookie", "own=2; Domain=.CHAT.example.com; Secure"),
            ("set-cookie", "plain=3; Path=/"),
            ("set-cookie", "d=domain=x; Path=/; Domain ="),
            ("x-other", "1"),
        ]);
        confine_cookies(&mut h, "chat.example.com");
        assert_eq!(
            values(&h, "set-cookie"),
            [
                &b"sid=x; Path=/; HttpOnly"[..],
                b"a=1",
                b"own=2; Domain=.CHAT.example.com; Secure",
                b"plain=3; Path=/",
                b"d=domain=x; Path=/",
            ]
        );
        assert!(h.contains_key("x-other"));
    }
}

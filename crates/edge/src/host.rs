//! From a visitor's Host header to a tunnel name, refusing anything odd.

/// Why a Host was refused (the visitor gets 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No Host header and no authority in the request target.
    #[error("the request has no Host")]
    Missing,
    /// Not UTF-8, userinfo (`@`), bad port, empty labels, characters no hostname has.
    #[error("the Host header is not a valid host name")]
    Invalid,
    /// More than one Host header: which one the origin would believe is anyone's guess.
    #[error("the request has more than one Host header")]
    Duplicate,
    /// A Host header that names another host than the request target's authority routed to.
    #[error("the Host header names another host than the request target")]
    Mismatch,
}

/// What a valid Host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `NAME.domain`: the tunnel `NAME`.
    Tunnel(String),
    /// A valid host that is not one of our tunnels (the apex, another domain, nested names).
    Elsewhere(String),
}

/// Normalises `raw` (case-insensitive, port and trailing dot ignored) and maps it under
/// `domain`. Returns the cleaned host too, for pages and logs.
pub fn classify_host(raw: &[u8], domain: &str) -> Result<(Target, String), HostError> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| HostError::Invalid)?
        .trim();
    if s.is_empty() {
        return Err(HostError::Missing);
    }
    let host = match s.rsplit_once(':') {
        // Bracketed IPv6 literals have colons of their own.
        _ if s.starts_with('[') => {
            let end = s.find(']').ok_or(HostError::Invalid)?;
            // Only an IPv6 address may stand in brackets (RFC 3986 IP-literal; IPvFuture is
            // for nobody's browser): anything else, quotes included, would ride into pages
            // and logs as a "host".
            s[1..end]
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| HostError::Invalid)?;
            let rest = &s[end + 1..];
            if !rest.is_empty() {
                check_port(rest.strip_prefix(':').ok_or(HostError::Invalid)?)?;
            }
            return Ok((
                Target::Elsewhere(s[..=end].to_ascii_lowercase()),
                s[..=end].to_ascii_lowercase(),
            ));
        }
        Some((h, port)) => {
            check_port(port)?;
            h
        }
        None => s,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty()
        || host.len() > 253
        || host.split('.').any(|l| l.is_empty() || l.len() > 63)
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(HostError::Invalid);
    }
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let target = match host.strip_suffix(&domain).and_then(|p| p.strip_suffix('.')) {
        Some(label) if !label.contains('.') => Target::Tunnel(label.to_owned()),
        _ => Target::Elsewhere(host.clone()),
    };
    Ok((target, host))
}

fn check_port(port: &str) -> Result<(), HostError> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::Invalid);
    }
    port.parse::<u16>()
        .map(|_| ())
        .map_err(|_| HostError::Invalid)
}

/// The Host header's value in the start of a request head, as far as it has arrived: only
/// whole lines count, and the head's end stops the search. A routing hint, nothing more: hyper
/// parses the request for real afterwards.
pub(crate) fn peeked_host(head: &[u8]) -> Option<&[u8]> {
    let whole = &head[..head.iter().rposition(|b| *b == b'\n')?];
    let mut lines = whole.split(|b| *b == b'\n');
    lines.next()?; // the request line
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        if let Some((name, value)) = line.split_at_checked(5)
            && name.eq_ignore_ascii_case(b"host:")
        {
            return Some(value.trim_ascii());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_is_found_in_whole_lines_only() {
        let head = b"GET / HTTP/1.1\r\nUser-Agent: x\r\nHOST:  chat.localhost:8080 \r\nAccept: */*\r\n\r\n";
        assert_eq!(super::peeked_host(head), Some(&b"chat.localhost:8080"[..]));
        // Cut inside the Host line: not yet known.
        assert_eq!(super::peeked_host(b"GET / HTTP/1.1\r\nHost: cha"), None);
        assert_eq!(super::peeked_host(b"GET / HTTP/1.1"), None);
        // After the head's end (a body) or in the request line, "Host:" is not a header.
        assert_eq!(
            super::peeked_host(b"GET /Host:x HTTP/1.1\r\n\r\nHost: a\r\n"),
            None
        );
        assert_eq!(super::peeked_host(b""), None);
        assert_eq!(super::peeked_host(b"\n\n\n"), None);
        assert_eq!(super::peeked_host(b"x\nhost:\n"), Some(&b""[..]));
    }

    use super::*;

    fn label(raw: &str) -> Result<Target, HostError> {
        classify_host(raw.as_bytes(), "example.com").map(|(t, _)| t)
    }

    #[test]
    fn normalises() {
        let chat = Ok(Target::Tunnel("chat".into()));
        assert_eq!(label("chat.example.com"), chat);
        assert_eq!(label("CHAT.Example.COM"), chat);
        assert_eq!(label("chat.example.com:8080"), chat);
        assert_eq!(label("chat.example.com."), chat);
        assert_eq!(label("chat.example.com.:443"), chat);
    }

    #[test]
    fn elsewhere() {
        assert!(matches!(label("example.com"), Ok(Target::Elsewhere(_))));
        assert!(matches!(label("a.b.example.com"), Ok(Target::Elsewhere(_))));
        assert!(matches!(
            label("chat.example.org"),
            Ok(Target::Elsewhere(_))
        ));
        assert!(matches!(label("chatexample.com"), Ok(Target::Elsewhere(_))));
        assert!(matches!(label("[::1]:80"), Ok(Target::Elsewhere(_))));
    }

    #[test]
    fn refuses_tricks() {
        for bad in [
            "chat.example.com:8080:80",
            "chat.example.com:abc",
            "chat.example.com:99999",
            "chat.example.com:",
            "user@chat.example.com",
            "chat.example.com@evil.com",
            "chat..example.com",
            "chat.example.com/x",
            "chat example.com",
            "[::1",
            "[::1]x",
            // Found by the fuzz target `host`: brackets took anything as a "host".
            "[\"<x>]",
            "[1.2.3.4]",
            "[]",
        ] {
            assert_eq!(label(bad), Err(HostError::Invalid), "{bad}");
        }
        assert_eq!(
            classify_host(b"ch\xffat.example.com", "example.com"),
            Err(HostError::Invalid)
        );
        assert_eq!(label(""), Err(HostError::Missing));
    }
}

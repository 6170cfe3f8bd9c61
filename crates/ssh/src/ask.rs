//! What a `tcpip-forward` request asks for: a pure reading of OpenSSH's `-R` spellings.

use warren_registry::RouteKind;

/// What a `tcpip-forward` request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    Random,
    Named(String, RouteKind),
    /// `-R tcp:PORT:…`: a raw TCP tunnel on a public port (0: any port of the range).
    Tcp(Option<u16>),
    Refuse(String),
}

/// Maps OpenSSH's `-R [bind_address:]port:…` onto what Warren serves: port 80 (or 0) is HTTP,
/// 443 a TLS passthrough (when the broker has an HTTPS listener).
pub(crate) fn classify(address: &str, port: u32, domain: &str, passthrough: bool) -> Ask {
    if address == "tcp" {
        return match u16::try_from(port) {
            Ok(0) => Ask::Tcp(None),
            Ok(p) => Ask::Tcp(Some(p)),
            Err(_) => Ask::Refuse(format!("port {port} is not a TCP port")),
        };
    }
    let wildcard = matches!(
        address,
        "" | "localhost" | "0.0.0.0" | "127.0.0.1" | "::" | "::1" | "*"
    );
    match (wildcard, port) {
        (true, 0 | 80) => Ask::Random,
        (true, p) => Ask::Refuse(format!(
            "port {p}: this broker serves HTTP tunnels; use -R 0:localhost:PORT for a random name \
             or -R NAME:80:localhost:PORT for a named one"
        )),
        (false, 0 | 80 | 443) => {
            // Case is kept: `names::validate` refuses uppercase rather than folding it.
            let host = address.trim_end_matches('.');
            let label = host
                .strip_suffix(&format!(".{domain}"))
                .unwrap_or(host)
                .to_owned();
            match port {
                443 if passthrough => Ask::Named(label, RouteKind::TlsPassthrough),
                443 => Ask::Refuse(format!(
                    "{address}:443: TLS passthrough needs the broker's HTTPS listener, which is off"
                )),
                _ => Ask::Named(label, RouteKind::Http),
            }
        }
        (false, p) => Ask::Refuse(format!(
            "{address}:{p}: named tunnels use port 80 (-R {address}:80:localhost:PORT)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_openssh_requests() {
        let http = |n: &str| Ask::Named(n.into(), RouteKind::Http);
        let c = |a: &str, p: u32| classify(a, p, "example.com", true);
        assert_eq!(c("localhost", 0), Ask::Random);
        assert_eq!(c("", 0), Ask::Random);
        assert_eq!(c("localhost", 80), Ask::Random);
        assert_eq!(c("chat", 80), http("chat"));
        assert_eq!(c("chat.example.com", 80), http("chat"));
        assert_eq!(c("chat", 0), http("chat"));
        assert_eq!(
            c("chat", 443),
            Ask::Named("chat".into(), RouteKind::TlsPassthrough)
        );
        assert!(matches!(
            classify("chat", 443, "example.com", false),
            Ask::Refuse(_)
        ));
        assert!(matches!(c("chat", 8080), Ask::Refuse(_)));
        assert!(matches!(c("localhost", 22), Ask::Refuse(_)));
        assert_eq!(c("tcp", 0), Ask::Tcp(None));
        assert_eq!(c("tcp", 40100), Ask::Tcp(Some(40100)));
    }
}

//! How public URLs are written, shared by everything that prints one.

use warren_registry::{RouteKind, tcp_port};

/// The parts of a public URL that come from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrls {
    /// Base domain (`NAME.domain`).
    pub domain: String,
    /// `http` or `https`: the scheme of HTTP tunnels' URLs.
    pub scheme: String,
    /// Port of those URLs (omitted when it is the scheme's default).
    pub port: u16,
    /// Port of the HTTPS listener (TLS passthrough URLs).
    pub tls_port: u16,
    /// Host printed in `tcp://HOST:PORT`.
    pub tcp_host: String,
}

impl PublicUrls {
    /// The URL visitors use for `name` of `kind`.
    pub fn url(&self, kind: RouteKind, name: &str) -> String {
        match kind {
            RouteKind::Http => {
                with_port(&self.scheme, &format!("{name}.{}", self.domain), self.port)
            }
            RouteKind::TlsPassthrough => {
                with_port("https", &format!("{name}.{}", self.domain), self.tls_port)
            }
            RouteKind::Tcp => format!(
                "tcp://{}:{}",
                self.tcp_host,
                tcp_port(name).unwrap_or_default()
            ),
        }
    }

    /// The URL of a reservation of kind `kind` (`http`, `tls`, `tcp`).
    pub fn reservation_url(&self, kind: &str, name: &str) -> String {
        self.url(RouteKind::from_word(kind), name)
    }
}

fn with_port(scheme: &str, host: &str, port: u16) -> String {
    let default = if scheme == "https" { 443 } else { 80 };
    if port == default {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = PublicUrls {
            domain: "example.com".into(),
            scheme: "https".into(),
            port: 443,
            tls_port: 8443,
            tcp_host: "tunnel.example.com".into(),
        };
        assert_eq!(u.url(RouteKind::Http, "chat"), "https://chat.example.com");
        assert_eq!(
            u.url(RouteKind::TlsPassthrough, "db"),
            "https://db.example.com:8443"
        );
        assert_eq!(
            u.reservation_url("tcp", "tcp:20001"),
            "tcp://tunnel.example.com:20001"
        );
    }
}

//! The SSRF guard: a tenant's webhook URL must not make the broker POST into its own admin
//! listener or the operator's private network.
//!
//! A URL is checked when it is registered (a clear 422 naming `url`) and again at every
//! delivery, where the resolver below drops every address that is not public before reqwest
//! connects: a host name that resolved to a public address at registration and to 127.0.0.1
//! later (DNS rebinding) gets no connection. Redirects are not followed at all (a public
//! receiver could redirect to a private one). `webhook_allow_private = true` turns the guard
//! off for operators whose receivers live on their own network (and for tests).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::Url;

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("not a URL: {0}")]
    Malformed(String),
    /// A scheme other than http or https.
    #[error("use an http:// or https:// URL, not {0}:")]
    Scheme(String),
    /// No host.
    #[error("the URL has no host")]
    NoHost,
    /// The host does not resolve.
    #[error("cannot resolve {host}: {why}")]
    Unresolved {
        /// The host.
        host: String,
        /// The resolver's answer.
        why: String,
    },
    /// The host is, or resolves to, an address that is not public.
    #[error(
        "{host} is {addr}, a loopback, private, link-local or otherwise non-public address; \
         webhooks must reach a public receiver"
    )]
    Private {
        /// The host.
        host: String,
        /// The address found.
        addr: IpAddr,
    },
}

/// Whether `ip` is an address on the public internet: not loopback, private (RFC 1918, ULA),
/// link-local, unspecified, CGNAT, multicast, broadcast, documentation or benchmarking, and
/// not an IPv4 address hidden in IPv6 (mapped, NAT64) that would be one of those.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // 64:ff9b::/96 (NAT64): the IPv4 address in the low 32 bits decides.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return is_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
                || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
                || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[..6] == [0, 0, 0, 0, 0, 0]) // ::/96 IPv4-compatible (deprecated)
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0 // 0.0.0.0/8 "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 CGNAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240) // 240.0.0.0/4 reserved
}

/// Parses a webhook URL: http or https, with a host. Does not look the host up.
pub fn parse(url: &str) -> Result<Url, UrlError> {
    let u = Url::parse(url.trim()).map_err(|e| UrlError::Malformed(e.to_string()))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(UrlError::Scheme(u.scheme().to_owned()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    Ok(u)
}

/// The IP of a URL whose host is an address literal (`http://[::1]/`): reqwest connects to
/// those without asking any resolver, so the guard must look at them itself.
pub fn literal(u: &Url) -> Option<IpAddr> {
    let host = u.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Checks a parsed URL's host now: an address literal must be public, and a name must
/// resolve, to public addresses only. With `allow_private` only the resolution is checked.
pub async fn check(u: &Url, allow_private: bool) -> Result<(), UrlError> {
    let host = u.host_str().unwrap_or_default().to_owned();
    if let Some(ip) = literal(u) {
        return if allow_private || is_public(ip) {
            Ok(())
        } else {
            Err(UrlError::Private { host, addr: ip })
        };
    }
    let port = u.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| UrlError::Unresolved {
            host: host.clone(),
            why: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(UrlError::Unresolved {
            host,
            why: "no addresses".into(),
        });
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(UrlError::Private {
            host,
            addr: bad.ip(),
        });
    }
    Ok(())
}

/// reqwest's resolver for deliveries: the system's, minus every address that is not public
/// (unless private receivers are allowed). A name left with no address fails the attempt
/// before any connection is made.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// `webhook_allow_private`.
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            match (kept.is_empty(), found.first()) {
                (true, Some(first)) => Err(Box::new(UrlError::Private {
                    host,
                    addr: first.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                (true, None) => Err(Box::new(UrlError::Unresolved {
                    host,
                    why: "no addresses".into(),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                (false, _) => Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip(private)), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
    }

    #[tokio::test]
    async fn urls_are_http_with_a_public_host() {
        assert!(matches!(parse("ftp://x.example/"), Err(UrlError::Scheme(s)) if s == "ftp"));
        assert!(matches!(
            parse("file:///etc/passwd"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(parse("not a url"), Err(UrlError::Malformed(_))));
        let local = parse("http://127.0.0.1:9090/api/v1/users").expect("parses");
        assert!(matches!(
            check(&local, false).await,
            Err(UrlError::Private { .. })
        ));
        assert_eq!(check(&local, true).await, Ok(()));
        let v6 = parse("http://[::1]:9090/").expect("parses");
        assert_eq!(literal(&v6), Some(ip("::1")));
        assert!(check(&v6, false).await.is_err());
        // `localhost` is a name: the resolver's answer is what is refused.
        let name = parse("http://localhost:9090/").expect("parses");
        assert!(matches!(
            check(&name, false).await,
            Err(UrlError::Private { .. })
        ));
        let public = parse("https://203.0.114.7/hook").expect("parses");
        assert_eq!(check(&public, false).await, Ok(()));
    }
}

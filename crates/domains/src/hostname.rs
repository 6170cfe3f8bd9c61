//! Which host names a tenant may attach.
//!
//! A custom domain is routed by its exact name, like a tunnel's own `NAME.DOMAIN`; what is
//! refused here could never be proved (an IP literal, a bare TLD) or would let one tenant
//! take what belongs to the broker or to another tenant (the broker's own domain and
//! everything under it, the console host).

use crate::DomainError;

/// What a host name is checked against: the broker's own names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnNames {
    /// The broker's base domain (`tunnel.example.com`); it and every name under it are the
    /// broker's, served as reservations.
    pub domain: String,
    /// The console's host (`console.tunnel.example.com`, or elsewhere if configured so).
    pub console_host: String,
}

/// The normalised form of `raw` (lowercase, no trailing dot) if a tenant may attach it.
pub fn validate(raw: &str, own: &OwnNames) -> Result<String, DomainError> {
    let bad = |why: &str| DomainError::InvalidHostname {
        host: raw.chars().take(80).collect(),
        why: why.to_owned(),
    };
    let host = raw.trim();
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() {
        return Err(bad("it is empty"));
    }
    if host.len() > 253 {
        return Err(bad("it is longer than 253 characters"));
    }
    if host.starts_with("*.") {
        return Err(bad("wildcards cannot be attached; attach each name"));
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("it needs at least two labels, like app.example.org"));
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each label must be 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad(
                "use letters, digits and hyphens (internationalised names in their xn-- form)",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label cannot start or end with a hyphen"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("an IP address is not a domain"));
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return Err(bad("localhost names never reach this broker from outside"));
    }
    let domain = normal(&own.domain);
    if host == domain || host.ends_with(&format!(".{domain}")) {
        return Err(bad(&format!(
            "names under {domain} are the broker's own; reserve one instead"
        )));
    }
    if host == normal(&own.console_host) {
        return Err(bad("that is the broker's console"));
    }
    Ok(host)
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> OwnNames {
        OwnNames {
            domain: "tunnel.example.com".into(),
            console_host: "admin.example.net".into(),
        }
    }

    #[test]
    fn normalises_what_it_accepts() {
        let ok = |s: &str| validate(s, &own()).ok();
        assert_eq!(
            ok("App.Their-Domain.org."),
            Some("app.their-domain.org".into())
        );
        assert_eq!(ok("their-domain.org"), Some("their-domain.org".into()));
        assert_eq!(
            ok("xn--bcher-kva.example"),
            Some("xn--bcher-kva.example".into())
        );
        assert_eq!(
            ok("a.b.c.d.example.com"),
            Some("a.b.c.d.example.com".into())
        );
        // A sibling of the broker's domain is someone else's.
        assert_eq!(ok("other.example.com"), Some("other.example.com".into()));
    }

    #[test]
    fn refuses_what_cannot_be_a_tenants() {
        for bad in [
            "",
            ".",
            "org",
            "*.their-domain.org",
            "app..org",
            "-app.org",
            "app-.org",
            "app_x.org",
            "app.org/x",
            "user@app.org",
            "app.org:443",
            "127.0.0.1",
            "10.1.2.3.",
            "[::1]",
            "localhost",
            "x.localhost",
            "tunnel.example.com",
            "chat.tunnel.example.com",
            "a.b.TUNNEL.example.com.",
            "admin.example.net",
            "bücher.example",
        ] {
            assert!(validate(bad, &own()).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}.org", "a".repeat(64));
        assert!(validate(&long, &own()).is_err());
        let too_long = format!("{}org", "abcdefghi.".repeat(26));
        assert!(validate(&too_long, &own()).is_err());
    }

    #[test]
    fn the_message_says_why() {
        let e = validate("chat.tunnel.example.com", &own()).err();
        assert!(
            e.is_some_and(|e| e.to_string().contains("broker's own")),
            "the refusal should name the reason"
        );
    }
}

//! Which names can be put in a certificate.

use crate::AcmeError;

/// Lowercases `name` and checks it can be a certificate's DNS name: dot-separated labels of
/// letters, digits and inner hyphens, at least two of them, `*` only as a whole first label.
pub(crate) fn validate_name(name: &str) -> Result<String, AcmeError> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let invalid = || AcmeError::InvalidName(name.to_owned());
    let host = lower.strip_prefix("*.").unwrap_or(&lower);
    if lower.len() > 253 || host.split('.').count() < 2 {
        return Err(invalid());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(invalid());
        }
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn names() {
        assert_eq!(
            validate_name("Chat.Example.com.").ok().as_deref(),
            Some("chat.example.com")
        );
        assert_eq!(
            validate_name("*.example.com").ok().as_deref(),
            Some("*.example.com")
        );
        for bad in [
            "",
            "localhost",
            "a..b",
            "*.com.",
            "a.*.com",
            "-a.b",
            "a b.c",
            "ü.com",
            "*",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}

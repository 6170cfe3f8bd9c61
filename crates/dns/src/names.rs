//! Turning the strings callers pass into checked DNS names and TXT data, once, for all providers.

use hickory_proto::rr::Name;

use crate::DnsError;

/// Parses `input` as a fully qualified, lower-cased name. A trailing dot is optional.
pub(crate) fn parse_name(input: &str) -> Result<Name, DnsError> {
    let trimmed = input.trim();
    if trimmed.is_empty() || trimmed == "." {
        return Err(DnsError::BadInput("empty DNS name".into()));
    }
    if !trimmed.is_ascii() {
        return Err(DnsError::BadInput(format!(
            "DNS name {input:?} is not ASCII (use its punycode form)"
        )));
    }
    let mut name = Name::from_ascii(trimmed)
        .map_err(|e| DnsError::BadInput(format!("{input:?} is not a valid DNS name: {e}")))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// Parses `input` and checks that it is `zone` or inside it.
pub(crate) fn name_in_zone(input: &str, zone: &Name) -> Result<Name, DnsError> {
    let name = parse_name(input)?;
    if !zone.zone_of(&name) {
        return Err(DnsError::BadInput(format!(
            "{} is outside the zone {}",
            name.to_ascii(),
            zone.to_ascii()
        )));
    }
    Ok(name)
}

/// A name without its trailing dot, the way HTTP APIs spell it.
pub(crate) fn without_dot(name: &Name) -> String {
    let s = name.to_ascii();
    match s.strip_suffix('.') {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => s,
    }
}

/// Splits a TXT value into the ≤255-byte character-strings one TXT record carries, the way
/// every DNS server splits long values (DKIM keys). ACME values are 43 bytes: one string.
pub(crate) fn txt_strings(value: &str) -> Vec<&[u8]> {
    if value.is_empty() {
        return vec![&[]];
    }
    value.as_bytes().chunks(255).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_fully_qualified() {
        let n = parse_name("Chat.Example.COM").expect("valid");
        assert_eq!(n.to_ascii(), "chat.example.com.");
        assert_eq!(parse_name("chat.example.com.").expect("valid"), n);
        assert!(parse_name("").is_err());
        assert!(parse_name("bücher.example").is_err());
        assert!(parse_name("a..b").is_err());
    }

    #[test]
    fn zone_membership() {
        let zone = parse_name("example.com").expect("valid");
        assert!(name_in_zone("example.com", &zone).is_ok());
        assert!(name_in_zone("_acme-challenge.x.EXAMPLE.com", &zone).is_ok());
        assert!(name_in_zone("*.example.com", &zone).is_ok());
        assert!(matches!(
            name_in_zone("example.org", &zone),
            Err(DnsError::BadInput(_))
        ));
        assert!(name_in_zone("notexample.com", &zone).is_err());
    }

    #[test]
    fn long_txt_values_are_split() {
        let long = "a".repeat(300);
        let parts = txt_strings(&long);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), 255);
        assert_eq!(txt_strings("abc"), vec![b"abc".as_slice()]);
        assert_eq!(txt_strings("").len(), 1);
    }

    #[test]
    fn api_spelling_drops_the_dot() {
        let n = parse_name("x.example.com").expect("valid");
        assert_eq!(without_dot(&n), "x.example.com");
    }
}

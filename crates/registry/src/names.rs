//! Subdomain labels: what a tenant may ask for, and the random ones handed out for `-R 0:`.

use rand::RngExt;

/// Labels no tenant may take: they belong to the operator's own services or would confuse
/// visitors and certificate validation.
pub const RESERVED: &[&str] = &[
    "www",
    "console",
    "api",
    "admin",
    "_acme-challenge",
    "mail",
    "smtp",
    "imap",
    "pop",
    "ns",
    "ns1",
    "ns2",
    "dns",
    "ftp",
    "localhost",
    "status",
    "dashboard",
    "static",
    "assets",
    "autoconfig",
    "autodiscover",
    "broker",
    "warren",
    "ssh",
    "tunnel",
    "wpad",
    "isatap",
];

/// Why a label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty label.
    #[error("a name cannot be empty")]
    Empty,
    /// Longer than DNS allows.
    #[error("name {0:?} is longer than 63 characters")]
    TooLong(String),
    /// Characters outside `a-z 0-9 -`.
    #[error("name {0:?} may only use lowercase letters, digits and '-'")]
    BadChars(String),
    /// Starts or ends with a hyphen.
    #[error("name {0:?} cannot start or end with '-'")]
    EdgeHyphen(String),
    /// On the reserved list.
    #[error("name {0:?} is reserved by the operator")]
    Reserved(String),
    /// Punycode (`xn--…`), or `--` in the third and fourth places, which IDNA keeps for such
    /// prefixes (RFC 5891 §4.2.3.1). An internationalised name can spell a look-alike of
    /// another tenant's or a well-known name (`xn--pypal-4ve` shows as `pаypal`, with a
    /// Cyrillic `а`): on a domain many tenants share, that is a phishing aid.
    #[error(
        "name {0:?} is refused: punycode (xn--) and '--' in places 3-4 can spell look-alikes of other names"
    )]
    LookAlike(String),
}

/// Checks that `name` is one DNS label a tenant may hold: 1–63 of `a-z0-9-`, no leading or
/// trailing hyphen, lowercase only (we refuse rather than fold case, so what the tenant typed is
/// exactly what is bound), and not on [`RESERVED`].
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 63 {
        return Err(NameError::TooLong(name.to_owned()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(NameError::BadChars(name.to_owned()));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::EdgeHyphen(name.to_owned()));
    }
    if name.get(2..4) == Some("--") {
        return Err(NameError::LookAlike(name.to_owned()));
    }
    if RESERVED.contains(&name) {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(())
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "clever", "cosy", "daring", "eager", "fancy", "gentle", "happy", "jolly",
    "keen", "lively", "lucky", "merry", "nimble", "polite", "proud", "quick", "quiet", "rapid",
    "shiny", "silly", "smart", "snowy", "sunny", "swift", "tidy", "witty", "young", "zesty",
    "amber", "bold", "bright", "crisp", "dusty", "fuzzy", "golden", "misty", "rosy", "wild",
];
const ANIMALS: &[&str] = &[
    "otter", "badger", "beaver", "bison", "crane", "dingo", "eagle", "ferret", "finch", "gecko",
    "heron", "ibis", "koala", "lemur", "lynx", "marten", "moose", "newt", "ocelot", "panda",
    "puffin", "quail", "rabbit", "raven", "seal", "stoat", "tapir", "toucan", "walrus", "wombat",
    "yak", "zebra", "fox", "hare", "mole", "owl", "robin", "swan", "vole", "wren",
];

/// A readable random label such as `brave-otter-42` (1.6 million combinations); callers check
/// it is free and draw again if not.
pub fn random() -> String {
    let mut rng = rand::rng();
    let a = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let b = ANIMALS[rng.random_range(0..ANIMALS.len())];
    let n: u16 = rng.random_range(0..1000);
    format!("{a}-{b}-{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["chat", "a", "my-app-2", "0x", &"a".repeat(63)] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_labels() {
        assert_eq!(validate(""), Err(NameError::Empty));
        assert!(matches!(
            validate(&"a".repeat(64)),
            Err(NameError::TooLong(_))
        ));
        for bad in ["Chat", "a.b", "a_b", "é", "a b", "a@b", "*"] {
            assert!(
                matches!(validate(bad), Err(NameError::BadChars(_))),
                "{bad}"
            );
        }
        assert!(matches!(validate("-a"), Err(NameError::EdgeHyphen(_))));
        assert!(matches!(validate("a-"), Err(NameError::EdgeHyphen(_))));
        for look_alike in ["xn--pypal-4ve", "xn--80ak6aa92e", "ab--c", "zz--top"] {
            assert!(
                matches!(validate(look_alike), Err(NameError::LookAlike(_))),
                "{look_alike}"
            );
        }
        assert_eq!(validate("a--b"), Ok(()), "'--' elsewhere is a plain name");
        for r in ["www", "console", "api", "_acme-challenge"] {
            assert!(validate(r).is_err(), "{r}");
        }
    }

    #[test]
    fn random_names_are_valid() {
        for _ in 0..1000 {
            let n = random();
            assert_eq!(validate(&n), Ok(()), "{n}");
        }
    }
}

//! API tokens: `wrn_` and 40 random letters and digits (238 bits). The prefix lets secret
//! scanners (GitHub's, gitleaks) recognise a leaked token; the store keeps only its SHA-256, so
//! a copy of the database does not hand out credentials. A fast hash is right here, unlike for
//! passwords: nobody can guess 238 random bits, so there is nothing for a slow hash to slow.

use rand::RngExt;
use sha2::{Digest, Sha256};

/// What every API token starts with.
pub const PREFIX: &str = "wrn_";
/// What the first-run setup token starts with: not an API token, and not to be mistaken for one.
pub const SETUP_PREFIX: &str = "wrs_";
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const RANDOM_CHARS: usize = 40;
/// How much of a token is kept for display (`wrn_AbCd`).
const HINT_CHARS: usize = PREFIX.len() + 4;

/// A fresh API token.
pub fn generate() -> String {
    generate_with(PREFIX)
}

/// A fresh secret of the token shape behind `prefix` (4 characters).
pub fn generate_with(prefix: &str) -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + RANDOM_CHARS);
    s.push_str(prefix);
    for _ in 0..RANDOM_CHARS {
        s.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    s
}

/// The form the store keeps and looks tokens up by: hex SHA-256.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The displayable start of a token.
pub fn hint(token: &str) -> String {
    token.chars().take(HINT_CHARS).collect()
}

/// Whether `s` has an API token's shape (checked before any lookup, so garbage costs no query).
pub fn looks_like_token(s: &str) -> bool {
    looks_like(s, PREFIX)
}

/// Whether `s` is `prefix` and 40 letters and digits.
pub fn looks_like(s: &str, prefix: &str) -> bool {
    s.len() == prefix.len() + RANDOM_CHARS
        && s.starts_with(prefix)
        && s[prefix.len()..].bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let t = generate();
        assert!(looks_like_token(&t), "{t}");
        assert_ne!(t, generate());
        assert_eq!(hint(&t).len(), 8);
        assert_eq!(hash(&t).len(), 64);
        assert!(!looks_like_token("wrn_short"));
        assert!(!looks_like_token(&t.replace("wrn_", "xyz_")));
        assert!(!looks_like_token(&format!("{}é", &t[..t.len() - 2])));
    }
}

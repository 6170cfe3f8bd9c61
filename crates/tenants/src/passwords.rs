//! Passwords people choose: argon2id (the OWASP default parameters of the `argon2` crate,
//! ~20 ms and 19 MiB per hash), stored as PHC strings.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::ServiceError;

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted (argon2 would take more, but nobody types this much, and a
/// megabyte "password" would cost the server for nothing).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks the length rules and hashes `password` with argon2id and a fresh random salt.
pub fn hash_password(password: &str) -> crate::Result<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ServiceError::invalid(
            "password",
            format!("use at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ServiceError::invalid(
            "password",
            format!("use at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(format!("argon2: {e}")))
}

/// Whether `password` matches the PHC string `hash` (constant-time in the password, as argon2's
/// own comparison is). A malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    password.len() <= MAX_PASSWORD_BYTES
        && Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
}

/// A hash that matches nothing, verified when the user does not exist or has no password so
/// that an unknown user costs as much time as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"warren-dummy-password-never-matches")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rules() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse battery "));
        assert!(!verify_password("not a hash", "x"));
        assert!(matches!(
            hash_password("short"),
            Err(ServiceError::Invalid { field: "password", .. })
        ));
        assert!(!verify_password(dummy_hash(), "warren-dummy-password-never-match"));
    }
}

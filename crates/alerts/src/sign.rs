//! Webhook secrets and the `X-Warren-Signature` header.
//!
//! A receiver checks a delivery with a few lines in any language:
//! `HMAC-SHA256(secret, timestamp + "." + body)` in lowercase hex, compared (in constant time)
//! with the header after its `sha256=`, where `timestamp` is the `X-Warren-Timestamp` header.
//! Signing the timestamp with the body lets a receiver refuse replays of an old delivery
//! (refuse timestamps more than a few minutes off); the `sha256=` prefix leaves room for
//! another algorithm later without breaking receivers (GitHub's and Stripe's shape).

use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use sha2::Sha256;

/// What every webhook secret starts with, so secret scanners recognise a leaked one.
pub const SECRET_PREFIX: &str = "whsec_";
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// 40 letters and digits: 238 bits.
const SECRET_CHARS: usize = 40;

/// A fresh webhook secret.
pub fn generate_secret() -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(SECRET_PREFIX.len() + SECRET_CHARS);
    s.push_str(SECRET_PREFIX);
    for _ in 0..SECRET_CHARS {
        s.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    s
}

fn mac(secret: &str, timestamp: i64, body: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac
}

/// The `X-Warren-Signature` value: `sha256=` and the lowercase hex HMAC.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Whether `header` is the signature of `body` at `timestamp` under `secret`, compared in
/// constant time: what a receiver written in Rust would call.
pub fn verify(secret: &str, timestamp: i64, body: &str, header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(bytes) = hex::decode(hex_sig) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_documented_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?". Split so
        // that timestamp + "." + body spells the data.
        let sig = signature("Jefe", 0, "what do ya want for nothing?");
        // The data signed here is "0.what do ya want for nothing?"; recompute by hand.
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").expect("key");
        m.update(b"0.what do ya want for nothing?");
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(m.finalize().into_bytes()))
        );
        assert!(verify("Jefe", 0, "what do ya want for nothing?", &sig));
        assert!(!verify("Jeff", 0, "what do ya want for nothing?", &sig));
        assert!(!verify("Jefe", 1, "what do ya want for nothing?", &sig));
        assert!(!verify("Jefe", 0, "what do ya want for nothing!", &sig));
        assert!(!verify("Jefe", 0, "x", "md5=00"));
        assert!(!verify("Jefe", 0, "x", "sha256=zz"));
    }

    #[test]
    fn secrets_are_fresh_and_prefixed() {
        let a = generate_secret();
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == 46, "{a}");
        assert_ne!(a, generate_secret());
    }
}

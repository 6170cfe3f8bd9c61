//! When to act next: renewal times and retry backoff, as pure functions of what the store says.
//!
//! The store keeps, per name, `last_attempt` and `next_attempt`; after a failure their difference
//! is the delay that was used, so the next delay (double it) needs no extra column and survives
//! restarts: a broker restarted in a crash loop does not reset its backoff against the CA.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use warren_store::Certificate;

/// A random fraction in [0, 1) to spread renewals and retries (several names issued together
/// must not all renew in the same second).
pub(crate) fn jitter() -> f64 {
    let mut b = [0u8; 8];
    if SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// The renewal time of a certificate valid over [`not_before`, `not_after`]: two thirds into its
/// lifetime, pulled earlier by up to a thirtieth of the lifetime (`jitter` in [0, 1)). For a
/// 90-day certificate that is day 57 to 60, leaving a month of retries before expiry.
pub(crate) fn renew_at(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let life = (not_after - not_before).max(0);
    let spread = (life as f64 / 30.0 * jitter) as i64;
    not_before + life * 2 / 3 - spread
}

/// Seconds to wait after a failed attempt, given the name's row before this failure: the
/// previous retry delay doubled if the previous attempt failed too, else `min`; at most `max`;
/// plus up to 10% jitter.
pub(crate) fn retry_delay(
    previous: Option<&Certificate>,
    min: Duration,
    max: Duration,
    jitter: f64,
) -> i64 {
    let min = min.as_secs().max(1) as i64;
    let max = (max.as_secs() as i64).max(min);
    let last = previous
        .filter(|c| c.last_error.is_some())
        .and_then(|c| Some(c.next_attempt? - c.last_attempt?))
        .filter(|d| *d > 0);
    let base = match last {
        Some(d) => d.saturating_mul(2),
        None => min,
    }
    .clamp(min, max);
    (base + (base as f64 * 0.1 * jitter) as i64).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(last_attempt: i64, next_attempt: i64) -> Certificate {
        Certificate {
            id: 1,
            name: "a.example.com".into(),
            chain_pem: None,
            private_key: None,
            not_before: None,
            not_after: None,
            issuer: None,
            challenge: None,
            last_error: Some("boom".into()),
            last_attempt: Some(last_attempt),
            next_attempt: Some(next_attempt),
            updated_at: last_attempt,
            owner_id: None,
        }
    }

    #[test]
    fn renewal_is_at_two_thirds_with_bounded_jitter() {
        let day = 86_400;
        assert_eq!(renew_at(0, 90 * day, 0.0), 60 * day);
        let early = renew_at(0, 90 * day, 0.999);
        assert!(early > 56 * day && early <= 60 * day);
        assert_eq!(renew_at(100, 100, 0.5), 100);
    }

    #[test]
    fn backoff_doubles_from_a_minute_up_to_a_day() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(86_400));
        assert_eq!(retry_delay(None, min, max, 0.0), 60);
        let mut row = failed(1_000, 1_060);
        let mut delays = vec![];
        for _ in 0..15 {
            let d = retry_delay(Some(&row), min, max, 0.0);
            delays.push(d);
            row = failed(
                row.next_attempt.unwrap_or(0),
                row.next_attempt.unwrap_or(0) + d,
            );
        }
        assert_eq!(&delays[..4], &[120, 240, 480, 960]);
        assert_eq!(*delays.last().unwrap_or(&0), 86_400);
        // Jitter adds at most 10% and never passes the cap.
        let d = retry_delay(None, min, max, 0.99);
        assert!((60..=66).contains(&d));
        assert_eq!(
            retry_delay(Some(&failed(0, 86_400)), min, max, 0.99),
            86_400
        );
        // A success in between resets the backoff.
        let mut ok = failed(1_000, 5_000);
        ok.last_error = None;
        assert_eq!(retry_delay(Some(&ok), min, max, 0.0), 60);
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}

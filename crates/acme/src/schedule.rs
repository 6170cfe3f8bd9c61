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

/// What ACME Renewal Information (RFC 9773) says to do with a certificate, once read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AriPlan {
    /// Renew now: the chosen point of the CA's window has passed (or the window is past the
    /// certificate's end, which only a confused CA would suggest).
    Now,
    /// Look again at this time (Unix seconds): the chosen point of the window, or the CA's
    /// `Retry-After`, whichever comes first (a CA can move the window, e.g. before a mass
    /// revocation, and says how often to ask).
    At(i64),
}

/// Shortest and longest time between two readings of a certificate's renewal information:
/// RFC 9773 §4.3.2 asks clients to bound a server's `Retry-After` both ways.
const ARI_POLL_MIN: i64 = 60;
const ARI_POLL_MAX: i64 = 24 * 3600;

/// The plan for a certificate valid until `not_after` whose CA suggests renewing in
/// [`start`, `end`] and asks to be asked again after `retry_after` seconds: a uniformly random
/// point of the window (`jitter` in [0, 1)), as RFC 9773 §4.2 says, so a CA's many clients do
/// not all come at its first second.
pub(crate) fn ari_plan(
    now: i64,
    (start, end): (i64, i64),
    retry_after: i64,
    not_after: i64,
    jitter: f64,
) -> AriPlan {
    let end = end.max(start);
    let chosen = start + ((end - start) as f64 * jitter) as i64;
    if chosen <= now || chosen >= not_after {
        return AriPlan::Now;
    }
    let poll = now + retry_after.clamp(ARI_POLL_MIN, ARI_POLL_MAX);
    AriPlan::At(chosen.min(poll))
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
    fn ari_picks_a_point_of_the_window_and_asks_again_when_told() {
        let (hour, day) = (3_600, 86_400);
        let (now, not_after) = (100 * day, 130 * day);
        // A window ahead: its start or middle by the jitter, unless asking again first.
        let soon = (now + 2 * hour, now + 4 * hour);
        assert_eq!(
            ari_plan(now, soon, day, not_after, 0.0),
            AriPlan::At(now + 2 * hour)
        );
        assert_eq!(
            ari_plan(now, soon, day, not_after, 0.5),
            AriPlan::At(now + 3 * hour)
        );
        // A window weeks ahead: ask again when told, within [1 min, 1 day].
        let later = (110 * day, 112 * day);
        assert_eq!(
            ari_plan(now, later, 6 * hour, not_after, 0.5),
            AriPlan::At(now + 6 * hour)
        );
        assert_eq!(
            ari_plan(now, later, 0, not_after, 0.5),
            AriPlan::At(now + 60)
        );
        assert_eq!(
            ari_plan(now, later, 90 * day, not_after, 0.5),
            AriPlan::At(now + day)
        );
        // A window that has begun (the CA moved it, e.g. before revoking): at once if the
        // chosen point has passed.
        assert_eq!(
            ari_plan(now, (now - day, now), hour, not_after, 0.3),
            AriPlan::Now
        );
        // A window past the certificate's end is not followed blindly; an inverted one is
        // read as its start.
        assert_eq!(
            ari_plan(now, (131 * day, 132 * day), hour, not_after, 0.0),
            AriPlan::Now
        );
        assert_eq!(
            ari_plan(now, (now + hour, now - day), day, not_after, 0.9),
            AriPlan::At(now + hour)
        );
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

//! What one tenant may ask of the SSH side, so that no tenant can starve the others. The limits
//! on what a tenant holds in the routing table (live tunnels, TCP ports) are the registry's
//! ([`warren_registry::OwnerLimits`]), checked atomically with the bind; these are the ones the
//! SSH side checks itself.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Per-session and per-user bounds on forwards and claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Forwards one SSH session may hold.
    pub forwards_per_session: usize,
    /// Names one user may hold reserved before auto-claim refuses another.
    pub names_per_user: usize,
    /// Names one user may auto-claim per hour (0: no limit).
    pub claims_per_hour: u32,
}

impl Default for SessionLimits {
    /// The broker's defaults: generous for a person, tight for a script gone wrong.
    fn default() -> Self {
        Self {
            forwards_per_session: 25,
            names_per_user: 50,
            claims_per_hour: 20,
        }
    }
}

/// The rate of auto-claims per user: a GCRA bucket per user (governor), so a burst of
/// `claims_per_hour` is allowed and then one more every `3600 / claims_per_hour` seconds.
pub(crate) struct ClaimLimiter {
    limiter: Option<DefaultKeyedRateLimiter<i64>>,
}

impl ClaimLimiter {
    pub(crate) fn new(per_hour: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_hour)
                .map(|n| RateLimiter::keyed(Quota::per_hour(n).allow_burst(n))),
        }
    }

    /// Takes one claim for `user`, or says how long until one is allowed.
    pub(crate) fn check(&self, user: i64) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        // Users who have not claimed for an hour are forgotten (the map stays small).
        limiter.retain_recent();
        limiter
            .check_key(&user)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_counted_per_user() {
        let l = ClaimLimiter::new(2);
        assert!(l.check(1).is_ok());
        assert!(l.check(1).is_ok());
        let wait = l.check(1).expect_err("third claim within the hour");
        assert!(wait > Duration::from_secs(60 * 29), "{wait:?}");
        assert!(l.check(2).is_ok(), "another user is not affected");
        let unlimited = ClaimLimiter::new(0);
        for _ in 0..100 {
            assert!(unlimited.check(1).is_ok());
        }
    }
}

//! New connections per IP per unit of time: a GCRA bucket per IP (governor's keyed limiter).
//!
//! governor keeps one 8-byte state per key in a sharded map and checks it with one atomic
//! compare-and-swap. Keys are never removed by checking, so the limiter forgets IPs whose
//! bucket is full again (`retain_recent`) at most once a second, from whichever accept comes
//! along first: a flood from many addresses leaves a map that is swept, not one that grows.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::IpKey;

/// How often the limiter's map is swept of IPs that are idle again.
const SWEEP: Duration = Duration::from_secs(1);

/// A rate of new connections per IP.
#[derive(Debug)]
pub struct IpRate {
    limiter: Option<DefaultKeyedRateLimiter<IpKey>>,
    started: Instant,
    /// Milliseconds after `started` of the last sweep.
    swept: AtomicU64,
}

impl IpRate {
    /// `per_period` new connections per `period` per IP, after a burst of `burst`
    /// (`per_period == 0`: no limit).
    pub fn new(per_period: u32, period: Duration, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_period).and_then(|n| {
            let replenish = period.checked_div(n.get())?;
            let quota = Quota::with_period(replenish)?
                .allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN));
            Some(RateLimiter::keyed(quota))
        });
        Self {
            limiter,
            started: Instant::now(),
            swept: AtomicU64::new(0),
        }
    }

    /// Counts a new connection from `ip`; `Err(wait)` when it is over the rate, with how long
    /// until the next one would be allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        self.sweep(limiter);
        limiter
            .check_key(&IpKey::of(ip))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn sweep(&self, limiter: &DefaultKeyedRateLimiter<IpKey>) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.swept.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP.as_millis() as u64 {
            return;
        }
        // One caller wins the sweep; the others go on at once.
        if self
            .swept
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// IPs the limiter remembers now (until the next sweep).
    pub fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_ip() {
        let r = IpRate::new(10, Duration::from_secs(1), 3);
        let a: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..3 {
            assert!(r.check(a).is_ok());
        }
        let wait = r.check(a).expect_err("past the burst");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(r.check([192, 0, 2, 2].into()).is_ok(), "another IP");
        let off = IpRate::new(0, Duration::from_secs(1), 0);
        for _ in 0..1000 {
            assert!(off.check(a).is_ok());
        }
    }
}

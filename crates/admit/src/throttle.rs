//! Logging refusals without letting a flood fill the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one log line per interval; the refusals in between are counted and told in it.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    started: Instant,
    /// Milliseconds after `started` of the last line, plus one (0: never).
    last: AtomicU64,
    quiet: AtomicU64,
}

impl Throttle {
    /// A line at most every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            started: Instant::now(),
            last: AtomicU64::new(0),
            quiet: AtomicU64::new(0),
        }
    }

    /// Counts one event; `Some(n)` when a line is due, with the `n` events not logged since
    /// the last one.
    pub fn hit(&self) -> Option<u64> {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.every.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.quiet.swap(0, Ordering::Relaxed));
        }
        self.quiet.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_then_a_count() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.hit(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.hit(), None);
        }
        let now = Throttle::new(Duration::ZERO);
        assert_eq!(now.hit(), Some(0));
        assert_eq!(now.hit(), Some(0));
    }
}

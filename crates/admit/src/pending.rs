//! Connections that have not yet said who they are (no request head, no ClientHello, no SSH
//! authentication): a global count with a cap.
//!
//! Such a connection costs a file descriptor and a little memory and gives nothing back; a
//! stranger can open them for free. Capping them, below the open-file limit, keeps descriptors
//! for the connections that are being served and for owners. An atomic add and compare: no
//! lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The count of connections not yet identified, and its cap.
#[derive(Debug)]
pub struct Pending {
    max: usize,
    held: AtomicUsize,
}

impl Pending {
    /// At most `max` connections pending at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: AtomicUsize::new(0),
        })
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections pending now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether at least three quarters of the places are taken: callers then give new
    /// connections a shorter deadline to identify themselves, so that a flood cannot keep
    /// every place for a whole deadline.
    pub fn pressed(&self) -> bool {
        self.held().saturating_mul(4) >= self.max.saturating_mul(3)
    }

    /// The places a stranger may take: all but the quarter kept for known sources
    /// (`crate::Known`), so a flood from strangers alone never fills the cap.
    pub fn strangers_max(&self) -> usize {
        self.max - self.max / 4
    }

    /// One more pending connection, or `None` at the cap: the whole cap for a `known` source
    /// (one that logged in before), [`Pending::strangers_max`] for anyone else.
    pub fn try_take(self: &Arc<Self>, known: bool) -> Option<PendingSlot> {
        let cap = if known {
            self.max
        } else {
            self.strangers_max()
        };
        let taken = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            });
        taken.ok().map(|_| PendingSlot {
            pending: self.clone(),
            released: AtomicBool::new(false),
        })
    }
}

/// One pending connection, counted until it identifies itself ([`PendingSlot::release`]) or is
/// dropped, whichever comes first.
#[derive(Debug)]
pub struct PendingSlot {
    pending: Arc<Pending>,
    released: AtomicBool,
}

impl PendingSlot {
    /// The connection has identified itself: it no longer counts. Idempotent and cheap (one
    /// atomic swap), so it can be called on every request of a connection.
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::Relaxed) {
            self.pending.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_counts_until_released_or_dropped_once() {
        let p = Pending::new(2);
        let a = p.try_take(true).expect("a");
        let b = p.try_take(true).expect("b");
        assert!(p.try_take(true).is_none());
        assert!(p.pressed());
        a.release();
        a.release();
        assert_eq!(p.held(), 1, "released once however often asked");
        drop(a);
        assert_eq!(
            p.held(),
            1,
            "dropping a released slot gives nothing back twice"
        );
        drop(b);
        assert_eq!(p.held(), 0);
        assert!(!p.pressed());
        assert!(
            !Pending::new(usize::MAX).pressed(),
            "no overflow when unlimited"
        );
    }

    #[test]
    fn strangers_leave_a_quarter_for_known_sources() {
        let p = Pending::new(8);
        let strangers: Vec<_> = std::iter::from_fn(|| p.try_take(false)).collect();
        assert_eq!(strangers.len(), 6);
        assert!(p.pressed(), "strangers at their share shorten deadlines");
        let known: Vec<_> = std::iter::from_fn(|| p.try_take(true)).collect();
        assert_eq!(known.len(), 2);
        assert_eq!(Pending::new(3).strangers_max(), 3, "too small to keep any");
        assert!(Pending::new(usize::MAX).try_take(false).is_some());
    }
}

//! How many live (Server-Sent Events) streams each user has open. Each stream of the tunnel
//! list builds the list once a second, so a token that opened thousands would cost thousands
//! of list builds a second; a user gets [`MAX_STREAMS_PER_USER`], which covers every tab and
//! device a person has, and a 429 beyond.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warren_tenants::ServiceError;

/// Live streams one user may hold open at once.
pub const MAX_STREAMS_PER_USER: usize = 16;

/// Open streams per user id.
#[derive(Debug, Default)]
pub struct Streams {
    open: Mutex<HashMap<i64, usize>>,
}

/// One open stream; dropping it (the client went, or the stream ended) gives the place back.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<Streams>,
    user: i64,
}

impl Streams {
    /// A place for one more stream of `user`, or 429 when they hold the most already.
    pub fn open(self: &Arc<Self>, user: i64) -> Result<StreamSlot, ServiceError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(user).or_default();
        if *n >= MAX_STREAMS_PER_USER {
            return Err(ServiceError::RateLimited {
                retry_after: Duration::from_secs(10),
            });
        }
        *n += 1;
        Ok(StreamSlot {
            streams: self.clone(),
            user,
        })
    }

    /// Streams `user` holds open now.
    pub fn held(&self, user: i64) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&user).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_the_cap_and_places_come_back() {
        let s = Arc::new(Streams::default());
        let slots: Vec<_> = (0..MAX_STREAMS_PER_USER)
            .map(|_| s.open(1).expect("under the cap"))
            .collect();
        assert!(matches!(s.open(1), Err(ServiceError::RateLimited { .. })));
        assert!(s.open(2).is_ok(), "another user is not affected");
        drop(slots);
        assert_eq!(s.held(1), 0);
        assert!(s.open(1).is_ok());
    }
}

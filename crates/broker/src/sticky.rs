//! Random names survive a restart of the broker. The registry keeps, per key and forward, the
//! random name it had (so `ssh -R 0:…` in a reconnect loop gets the same URL back), but in
//! memory only; each `tunnel.bind` and `tunnel.unbind` row of a random name carries that key
//! (`StickyKey::to_detail`), so at start the newest row of each name tells what to restore and
//! for how long: a name whose tunnel ended at `t` keeps its grace period until `t + grace`; one
//! still bound when the broker died (no unbind written) gets a full grace period from now.

use std::time::Duration;

use anyhow::Result;
use warren_registry::{Registry, StickyKey};
use warren_store::{AuditAction, Store};

/// Restores the random names still within their grace period; returns how many.
pub async fn restore(store: &dyn Store, registry: &Registry) -> Result<usize> {
    let rows = store
        .last_events_by_subject(&[AuditAction::TunnelBind, AuditAction::TunnelUnbind])
        .await?;
    let now = warren_store::now();
    let grace = registry.grace().as_secs() as i64;
    let mut restored = 0;
    for row in rows {
        let Some(key) = StickyKey::from_detail(&row.detail) else {
            continue;
        };
        let ended = match row.kind() {
            Some(AuditAction::TunnelUnbind) => row.at,
            _ => now,
        };
        let left = ended + grace - now;
        if left > 0 {
            registry.remember_for(key, &row.subject, Duration::from_secs(left as u64));
            restored += 1;
        }
    }
    Ok(restored)
}

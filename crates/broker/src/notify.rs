//! `Type=notify`: tells systemd when the broker is ready, reloading or stopping, over the
//! datagram socket in `$NOTIFY_SOCKET` (the `sd-notify` crate; no libsystemd).
//!
//! With READY sent only once every listener is bound and the store is open, `systemctl start`
//! returns when visitors can be served, and units ordered `After=warren.service` start then,
//! not when the process merely exists. Without `$NOTIFY_SOCKET` (not under systemd) each call
//! does nothing. A failed send is logged, never fatal: the broker serves either way.

use sd_notify::NotifyState;
use tracing::warn;

/// Every listener is bound and the store is open; `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A SIGHUP reload begins; [`ready`] follows when it is done. The monotonic timestamp is what
/// `Type=notify-reload` requires, and harmless with `Type=notify`.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown begins: systemd shows the unit as deactivating while visitors drain.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

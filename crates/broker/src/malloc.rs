//! The broker's use of glibc's allocator: how it is tuned at start, and freed memory given back
//! to the kernel now and then.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often freed memory is given back ([`trim_every_while`]).
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// glibc gives the top of a thread's heap back to the kernel as soon as 128 KiB of it is free.
/// Every SSH packet is a 32 KiB buffer allocated on one worker thread and freed on another, so
/// the broker kept unmapping pages and faulting them in again: ~10% of its CPU in a bulk
/// download. Keeping up to 4 MiB free per heap ends that and leaves idle memory per tunnel as it
/// was (measured with bench/run; mimalloc did as well on CPU but cost 18 KiB more per tunnel).
///
/// Setting the trim threshold also freezes glibc's mmap threshold at 128 KiB, and an upload is
/// read from the visitor in buffers of up to 256 KiB: each would be a fresh mapping, faulted in
/// page by page (130,000 page faults per GiB uploaded). Buffers up to 1 MiB come from the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: mallopt only sets allocator parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

/// Gives the allocator's free pages back to the kernel every [`TRIM_EVERY`] until `shutdown`.
///
/// glibc only returns memory from the top of a heap, and only past the trim threshold
/// ([`tune`] raised it): what thousands of tunnels' sessions freed in the middle of the heaps
/// stayed in the broker's RSS after they left, so RSS after a storm of tunnels never came back
/// down. `malloc_trim(0)` releases every free page of every arena (madvise), a few ms of work
/// on a thread of the blocking pool; what it releases is faulted in again only if used.
pub async fn trim_every_while(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes the arenas' own locks; it is safe from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

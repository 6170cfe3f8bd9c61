//! Tunnel threads: where SSH sessions and the connections of their visitors run.
//!
//! A download through a tunnel passes each SSH packet through three tasks: the SSH session that
//! decrypts it, the upstream HTTP connection that reads it, and the visitor's connection that
//! writes it out. On tokio's work-stealing runtime each hand-off could wake the other worker,
//! which then stole the next task: per packet a futex wake, a context switch and a cold cache,
//! and on a small box a broker thread preempting the very `ssh` client that feeds it. Measured
//! on 2 cores (512 MiB downloads, same run): 370 MB/s and 1.89 CPU-s/GiB in the broker with two
//! workers, 459 MB/s and 1.69 with one, ahead of OpenSSH's sshd (408).
//!
//! So each SSH session is placed on one of N single-threaded runtimes (one per core by
//! default), and a visitor connection, once its Host or SNI names a live tunnel, is handed to
//! that tunnel's thread before anything else runs for it. One tunnel's traffic stays on one
//! thread (as one OpenSSH client and one sshd process are single-threaded too), while many
//! tunnels spread over all cores. Everything else (console, API, certificates, accept loops)
//! stays on the main runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tracing::warn;

thread_local! {
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The tunnel threads.
#[derive(Debug)]
pub struct Shards {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Shards {
    /// Starts `n` tunnel threads (`tunnel-0`, …), each a current-thread runtime that runs for
    /// the rest of the process. `n == 0` is [`Shards::inline`].
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("tunnel-{i}"))
                .spawn(move || {
                    CURRENT.set(Some(i));
                    rt.block_on(std::future::pending::<()>());
                })?;
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
        })
    }

    /// No threads of its own: everything runs where it is spawned from.
    pub fn inline() -> Self {
        Self {
            handles: Vec::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// The tunnel thread the caller runs on, if it is one.
    pub fn current() -> Option<usize> {
        CURRENT.get()
    }

    /// How many tunnel threads there are (0 when inline).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether this runs everything inline.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Spawns `task` on tunnel thread `shard`; where the caller runs when `shard` is `None`, not
    /// one of ours, or the caller's own thread. Returns the tunnel thread the task runs on
    /// (`None`: not one of them), for a caller that keeps track of where its tasks live.
    pub fn spawn<Fut>(&self, shard: Option<usize>, task: Fut) -> Option<usize>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        match shard.filter(|i| *i < self.handles.len()) {
            #[allow(clippy::indexing_slicing)] // i < len, checked above
            Some(i) if Self::current() != Some(i) => {
                drop(self.handles[i].spawn(task));
                Some(i)
            }
            _ => {
                drop(tokio::spawn(task));
                Self::current()
            }
        }
    }

    /// Hands `socket` to tunnel thread `shard`, or to the next one in turn when `shard` is
    /// `None` (or not one of ours), and spawns `serve(socket)` there; returns at once. The
    /// socket is moved to that thread's reactor, so its readiness wakes that thread only.
    pub fn hand_off<F, Fut>(&self, shard: Option<usize>, socket: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            tokio::spawn(serve(socket));
            return;
        }
        let i = shard
            .filter(|i| *i < self.handles.len())
            .unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len());
        if Self::current() == Some(i) {
            tokio::spawn(serve(socket));
            return;
        }
        let socket = match socket.into_std() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot move a connection to its tunnel thread");
                return;
            }
        };
        #[allow(clippy::indexing_slicing)] // i < len, checked above
        self.handles[i].spawn(async move {
            // `into_std` leaves the socket non-blocking, as `from_std` needs it.
            match TcpStream::from_std(socket) {
                Ok(socket) => serve(socket).await,
                Err(e) => warn!(error = %e, "cannot adopt a connection on its tunnel thread"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    /// Serves one connection through `shards` on `shard` and says which thread served it.
    async fn served_on(shards: &Shards, shard: Option<usize>) -> Option<usize> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
        let addr = listener.local_addr().expect("loopback");
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.expect("loopback");
            c.write_all(b"ping").await.expect("loopback");
            let mut answer = [0u8; 4];
            c.read_exact(&mut answer).await.expect("loopback");
            answer
        });
        let (socket, _) = listener.accept().await.expect("loopback");
        let (tx, rx) = oneshot::channel();
        shards.hand_off(shard, socket, move |mut socket| async move {
            let mut got = [0u8; 4];
            socket.read_exact(&mut got).await.expect("loopback");
            socket.write_all(b"pong").await.expect("loopback");
            let _ = tx.send(Shards::current());
        });
        assert_eq!(&client.await.expect("client"), b"pong");
        rx.await.expect("served")
    }

    #[tokio::test]
    async fn a_connection_is_served_on_the_thread_asked_for() {
        let shards = Shards::start(2).expect("threads");
        assert_eq!(served_on(&shards, Some(1)).await, Some(1));
        assert_eq!(served_on(&shards, Some(0)).await, Some(0));
    }

    #[tokio::test]
    async fn without_a_thread_asked_for_they_take_turns() {
        let shards = Shards::start(2).expect("threads");
        let a = served_on(&shards, None).await.expect("a tunnel thread");
        let b = served_on(&shards, None).await.expect("a tunnel thread");
        assert_ne!(a, b);
        // Not one of ours: also in turn, not a panic.
        assert!(served_on(&shards, Some(7)).await.is_some());
    }

    #[tokio::test]
    async fn a_task_runs_on_the_thread_asked_for_or_where_it_is_spawned() {
        let shards = Shards::start(2).expect("threads");
        for want in [Some(1), Some(0), None, Some(7)] {
            let (tx, rx) = oneshot::channel();
            let said = shards.spawn(want, async move {
                let _ = tx.send(Shards::current());
            });
            let ran_on = rx.await.expect("ran");
            // None and out-of-range: where the caller runs (the test's runtime, no tunnel thread).
            assert_eq!(ran_on, want.filter(|i| *i < 2));
            assert_eq!(
                said, ran_on,
                "spawn named another thread than the one the task ran on"
            );
        }
    }

    #[tokio::test]
    async fn inline_serves_where_it_is_called() {
        assert_eq!(served_on(&Shards::inline(), Some(0)).await, None);
    }
}

//! What the tunnel owner sees in their terminal.
//!
//! OpenSSH sends its `tcpip-forward` requests before it opens the session channel, and with
//! `ssh -N` it never opens one, so text is queued here until a channel attaches. Senders never
//! block: a visitor request must not wait on the owner's terminal, so lines beyond the queue
//! depth are dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use russh::ChannelId;
use russh::server::Handle;
use tokio::sync::mpsc;

const DEPTH: usize = 256;

enum Msg {
    Line(String),
    Attach(ChannelId, Handle),
}

/// A cheap handle to one session's terminal.
#[derive(Clone)]
pub(crate) struct Console {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl Console {
    /// Starts the writer task for one session.
    pub(crate) fn spawn() -> Self {
        let (tx, rx) = mpsc::channel(DEPTH);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_loop(rx, dropped.clone()));
        Self { tx, dropped }
    }

    /// Queues one line (without line ending).
    pub(crate) fn line(&self, text: impl Into<String>) {
        if self.tx.try_send(Msg::Line(text.into())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts delivering to the session channel `id`, queued lines first.
    pub(crate) fn attach(&self, id: ChannelId, handle: Handle) {
        // Attach must not be lost to a full queue; the queue drains quickly once attached.
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Msg::Attach(id, handle)).await;
        });
    }
}

async fn write_loop(mut rx: mpsc::Receiver<Msg>, dropped: Arc<AtomicU64>) {
    let mut queued: Vec<String> = Vec::new();
    let mut target: Option<(ChannelId, Handle)> = None;
    while let Some(first) = rx.recv().await {
        // Batch whatever else is already waiting into one SSH packet: under load a busy tunnel
        // logs thousands of requests a second, and one packet per line would cost the owner's
        // ssh client more than the requests themselves.
        let mut batch = vec![first];
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut text = String::new();
        for msg in batch {
            match msg {
                Msg::Line(line) => {
                    if target.is_none() {
                        if queued.len() < DEPTH {
                            queued.push(line);
                        }
                        continue;
                    }
                    let n = dropped.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        text.push_str(&format!(
                            "({n} lines dropped: the terminal did not keep up)\r\n"
                        ));
                    }
                    text.push_str(&line);
                    text.push_str("\r\n");
                }
                Msg::Attach(id, handle) => {
                    for line in queued.drain(..) {
                        text.push_str(&line);
                        text.push_str("\r\n");
                    }
                    target = Some((id, handle));
                }
            }
        }
        if let (Some((id, handle)), false) = (&target, text.is_empty())
            && handle.data(*id, text.into_bytes()).await.is_err()
        {
            return;
        }
    }
}
